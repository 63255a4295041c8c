"""Telegram update handlers: thin glue between chat, storage and the queue."""

from __future__ import annotations

import logging

from telegram import (
    CallbackQuery,
    ForceReply,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import callback_data as cd
from bot import texts
from bot.intake import Upload, inspect_upload, size_limit_mb
from bot.jobs import SeparationJob, separation_job_id
from bot.keyboards import picker_keyboard, rating_keyboard
from bot.queue import QueueUnavailable
from bot.services import BotServices
from storage import NewRequest, Request

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE


class Handlers:
    """The bot's handlers, bound to the process's services."""

    def __init__(self, services: BotServices) -> None:
        self.services = services
        self.settings = services.settings

    def register(self, application: Application) -> None:
        application.add_handler(CommandHandler(["start", "help"], self.help))
        application.add_handler(CommandHandler("stats", self.stats))
        application.add_handler(CallbackQueryHandler(self.button))
        application.add_handler(
            MessageHandler(
                (
                    filters.AUDIO
                    | filters.VOICE
                    | filters.Document.ALL
                    | filters.VIDEO
                    | filters.VIDEO_NOTE
                    | filters.ANIMATION
                    | filters.PHOTO
                    | filters.Sticker.ALL
                )
                # An edited caption is not a new song.
                & filters.UpdateType.MESSAGE,
                self.song,
            )
        )
        application.add_handler(
            MessageHandler(filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE, self.text)
        )
        application.add_error_handler(self.error)

    # Commands

    async def help(self, update: Update, context: Context) -> None:
        """/start and /help: what to send and what comes back."""
        if update.effective_message is None:
            return
        limit_mb = size_limit_mb(self.settings.max_file_mb, self.settings.telegram_local_mode)
        await update.effective_message.reply_text(
            texts.help_text(limit_mb, self.settings.max_duration_s), parse_mode=ParseMode.HTML
        )

    async def stats(self, update: Update, context: Context) -> None:
        """/stats: usage and feedback figures, for admins only."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        if user.id not in self.settings.admin_ids:
            logger.info("stats refused", extra={"user_id": user.id})
            await message.reply_text(texts.ADMINS_ONLY)
            return
        figures = (await self.services.db.stats()).to_dict()
        await message.reply_text(texts.stats_text(figures))

    # Songs

    async def song(self, update: Update, context: Context) -> None:
        """An audio file, voice message, document or video: refuse it or offer the picker."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        verdict = inspect_upload(
            message,
            max_file_mb=self.settings.max_file_mb,
            local_mode=self.settings.telegram_local_mode,
            max_duration_s=self.settings.max_duration_s,
        )
        if verdict is None:
            return
        if isinstance(verdict, str):
            if verdict in (texts.NOT_AUDIO, texts.VIDEO_REFUSED) and message.chat.type != "private":
                # In a group, photos, videos and PDFs are people talking to each other.
                return
            logger.info("upload refused: %s", verdict, extra={"user_id": user.id})
            await message.reply_text(verdict, do_quote=True)
            return
        upload = verdict
        request = await self.services.db.add_request(_new_request(message, user.id, upload))
        picker = await message.reply_text(
            texts.picker_text(request.song_name, ()),
            parse_mode=ParseMode.HTML,
            reply_markup=picker_keyboard(request.id, ()),
            do_quote=True,
        )
        await self.services.db.set_picker_message(request.id, picker.message_id)
        logger.info(
            "request stored",
            extra={"user_id": user.id, "request_id": request.id, "kind": upload.kind},
        )

    # Buttons

    async def button(self, update: Update, context: Context) -> None:
        """Every inline button: toggle, all, separate, vote; anything else gets an alert."""
        query = update.callback_query
        if query is None:
            return
        data = cd.parse(query.data)
        request = None if data is None else await self.services.db.get_request(data.request_id)
        if data is None or request is None or not _same_chat(query, request):
            logger.info(
                "stale or forged button",
                extra={"user_id": query.from_user.id, "data": (query.data or "")[:64]},
            )
            await query.answer(texts.STALE_BUTTON, show_alert=True)
            return
        if query.from_user.id != request.user_id:
            await query.answer(texts.NOT_YOUR_SONG, show_alert=True)
            return
        if data.action == "toggle":
            assert data.arg is not None
            picked = await self.services.db.toggle_source(request.id, data.arg)
            await self._show_picker(query, request, picked)
        elif data.action == "all":
            picked = await self.services.db.set_selection(request.id, cd.SOURCES)
            await self._show_picker(query, request, picked)
        elif data.action == "separate":
            await self._separate(query, request)
        else:
            assert data.arg in ("up", "down")
            await self._vote(query, request, data.arg)

    async def _show_picker(
        self, query: CallbackQuery, request: Request, picked: frozenset[str]
    ) -> None:
        try:
            await query.edit_message_text(
                texts.picker_text(request.song_name, picked),
                parse_mode=ParseMode.HTML,
                reply_markup=picker_keyboard(request.id, picked),
            )
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                raise
        finally:
            await query.answer()

    async def _separate(self, query: CallbackQuery, request: Request) -> None:
        db, queue = self.services.db, self.services.queue
        picked = await db.selection(request.id)
        if not picked:
            await query.answer(texts.NOTHING_PICKED, show_alert=True)
            return
        stems = tuple(source for source in cd.SOURCES if source in picked)
        job_id = separation_job_id(request.id, stems)
        extra = {"job_id": job_id, "user_id": request.user_id, "request_id": request.id}
        known = await db.get_job(job_id)
        if known is not None and known.status in ("queued", "running"):
            await query.answer(texts.ALREADY_QUEUED)
            return
        if await db.active_job_count(request.user_id) >= self.settings.max_active_jobs_per_user:
            await query.answer(
                texts.too_many_jobs(self.settings.max_active_jobs_per_user), show_alert=True
            )
            return
        try:
            state = await queue.state(job_id)
            if state.state in ("queued", "running"):
                await query.answer(texts.ALREADY_QUEUED)
                return
            if state.state == "done":
                await query.answer(texts.ALREADY_DELIVERED, show_alert=True)
                return
            if state.state == "failed":
                if not state.retryable:
                    await query.answer(texts.RECENTLY_FAILED, show_alert=True)
                    return
                # Our side failed, not the song: the same pick runs again under its id.
                await queue.forget(job_id)
                logger.info("failed job started again", extra=extra)
            position = await queue.waiting_count() + 1
        except QueueUnavailable as exc:
            logger.warning("queue unreachable at enqueue: %s", exc, extra=extra)
            await query.answer(texts.QUEUE_DOWN, show_alert=True)
            return
        status = await query.get_bot().send_message(
            request.chat_id,
            texts.queued(position),
            reply_parameters=ReplyParameters(
                message_id=request.message_id, allow_sending_without_reply=True
            ),
        )
        job = SeparationJob(
            request_id=request.id,
            chat_id=request.chat_id,
            user_id=request.user_id,
            file_id=request.file_id,
            song_name=request.song_name,
            stems=stems,
            status_message_id=status.message_id,
            reply_to_message_id=request.message_id,
            file_size=request.file_size,
            artist=request.artist,
        )
        try:
            enqueued = await queue.enqueue(job)
        except QueueUnavailable as exc:
            logger.warning("queue unreachable at enqueue: %s", exc, extra=extra)
            await status.edit_text(texts.QUEUE_DOWN)
            await query.answer(texts.QUEUE_DOWN, show_alert=True)
            return
        if not enqueued:
            # Another press won the race; its status message is the one to watch.
            await status.delete()
            await query.answer(texts.ALREADY_QUEUED)
            return
        await db.add_job(
            job_id=job_id,
            request_id=request.id,
            chat_id=request.chat_id,
            user_id=request.user_id,
            stems=stems,
            status_message_id=status.message_id,
            queue_position=position,
        )
        logger.info("job queued", extra={**extra, "stems": ",".join(stems), "position": position})
        await query.answer()

    async def _vote(self, query: CallbackQuery, request: Request, vote: str) -> None:
        assert vote in ("up", "down")
        db = self.services.db
        previous = await db.set_vote(
            request.id, query.from_user.id, "up" if vote == "up" else "down"
        )
        logger.info(
            "vote stored",
            extra={"user_id": query.from_user.id, "request_id": request.id, "vote": vote},
        )
        await query.answer(
            texts.VOTE_THANKS[vote] if previous in (None, vote) else texts.VOTE_CHANGED
        )
        try:
            await query.edit_message_reply_markup(rating_keyboard(request.id, chosen=vote))
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                raise
        if vote == "down" and previous != "down":
            # Replying to the user's own song makes ForceReply target them in groups.
            prompt = await query.get_bot().send_message(
                request.chat_id,
                texts.WHAT_WENT_WRONG,
                reply_markup=ForceReply(selective=True, input_field_placeholder="What was wrong?"),
                reply_parameters=ReplyParameters(
                    message_id=request.message_id, allow_sending_without_reply=True
                ),
            )
            await db.add_feedback_prompt(
                chat_id=prompt.chat_id,
                message_id=prompt.message_id,
                request_id=request.id,
                user_id=query.from_user.id,
            )

    # Text

    async def text(self, update: Update, context: Context) -> None:
        """A reply to the 👎 follow-up is stored; other text in private chats gets a hint."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None or not message.text:
            return
        replied = message.reply_to_message
        if replied is not None:
            prompt = await self.services.db.feedback_prompt(message.chat_id, replied.message_id)
            if prompt is not None and prompt[1] == user.id:
                await self.services.db.add_comment(prompt[0], user.id, message.text[:2000])
                logger.info(
                    "feedback comment stored", extra={"user_id": user.id, "request_id": prompt[0]}
                )
                await message.reply_text(texts.COMMENT_THANKS, do_quote=True)
                return
        if message.chat.type == "private":
            await message.reply_text(texts.SEND_A_SONG)

    # Errors

    async def error(self, update: object, context: Context) -> None:
        """Log any handler error with its traceback; the bot keeps serving."""
        user_id = None
        if isinstance(update, Update) and update.effective_user is not None:
            user_id = update.effective_user.id
        logger.error(
            "handler error: %r",
            context.error,
            exc_info=context.error,
            extra={"user_id": user_id},
        )


def _same_chat(query: CallbackQuery, request: Request) -> bool:
    # A button is only valid on a message in the request's own chat.
    message = query.message
    return message is None or message.chat.id == request.chat_id


def _new_request(message: Message, user_id: int, upload: Upload) -> NewRequest:
    return NewRequest(
        chat_id=message.chat_id,
        user_id=user_id,
        message_id=message.message_id,
        file_id=upload.file_id,
        file_unique_id=upload.file_unique_id,
        file_size=upload.file_size,
        mime_type=upload.mime_type,
        kind=upload.kind,
        song_name=upload.song_name,
        artist=upload.artist,
        duration_s=upload.duration_s,
    )
