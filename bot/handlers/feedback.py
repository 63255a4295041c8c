"""Feedback: the 👍 / 👎 buttons and the answer to "what was wrong?"."""

from __future__ import annotations

import logging

from telegram import ForceReply, Message, ReplyParameters, Update
from telegram.ext import filters

from bot import texts
from bot.handlers.context import (
    Context,
    answer_stale,
    pressed_request,
    services_of,
    user_language,
)
from common.i18n import translate
from common.rating import mix_url_of, rating_keyboard
from common.telegram import edit_message
from separation.formats import output_format
from storage import Vote

logger = logging.getLogger(__name__)

TEXT_MESSAGES = filters.TEXT & ~filters.COMMAND & filters.UpdateType.MESSAGE
MAX_COMMENT_CHARS = 2000


async def vote(update: Update, context: Context) -> None:
    """👍 / 👎 on one job's tracks: store the vote (a new one replaces it); after 👎 ask why."""
    pressed = await pressed_request(update, context)
    if pressed is None:
        return
    query, data, request, lang = pressed
    services = services_of(context)
    db = services.db
    job_id = data.rated_job_id
    # A button from before ratings were per job rates the request's latest job.
    job = await (db.latest_job(request.id) if job_id is None else db.get_job(job_id))
    if job is None:
        await answer_stale(query, lang)
        return
    choice: Vote = "up" if data.arg == "up" else "down"
    previous = await db.set_vote(job.job_id, query.from_user.id, choice)
    services.metrics.vote_stored(choice, previous)
    extra = {"user_id": query.from_user.id, "request_id": request.id, "job_id": job.job_id}
    logger.info("vote stored", extra={**extra, "vote": choice})
    await query.answer(
        translate(
            texts.VOTE_THANKS[choice] if previous in (None, choice) else texts.VOTE_CHANGED, lang
        )
    )
    keyboard = rating_keyboard(
        request.id,
        job.stems,
        output_format(job.output_format),
        chosen=choice,
        # The Mix button stays (issue 18): the worker put it there, with its mix's URL.
        mix_url=mix_url_of(
            query.message.reply_markup if isinstance(query.message, Message) else None
        ),
    )
    await edit_message(query.edit_message_reply_markup(keyboard), extra)
    if choice == "down" and previous != "down":
        # Replying to the user's own song makes ForceReply target them in groups.
        prompt = await query.get_bot().send_message(
            request.chat_id,
            translate(texts.WHAT_WENT_WRONG, lang),
            reply_markup=ForceReply(
                selective=True,
                input_field_placeholder=translate(texts.WHAT_WENT_WRONG_PLACEHOLDER, lang),
            ),
            reply_parameters=ReplyParameters(request.message_id, allow_sending_without_reply=True),
        )
        await db.add_feedback_prompt(
            chat_id=prompt.chat_id,
            message_id=prompt.message_id,
            job_id=job.job_id,
            user_id=query.from_user.id,
        )


async def text(update: Update, context: Context) -> None:
    """A reply to the 👎 follow-up is stored; other text in private chats gets a hint."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None or not message.text:
        return
    db = services_of(context).db
    replied = message.reply_to_message
    prompt = (
        None if replied is None else await db.feedback_prompt(message.chat_id, replied.message_id)
    )
    if prompt is not None and prompt[1] == user.id:
        await db.add_comment(prompt[0], user.id, message.text[:MAX_COMMENT_CHARS])
        logger.info("feedback comment stored", extra={"user_id": user.id, "job_id": prompt[0]})
        lang = await user_language(context, user)
        await message.reply_text(translate(texts.COMMENT_THANKS, lang), do_quote=True)
    elif message.chat.type == "private":
        await message.reply_text(texts.send_a_song(await user_language(context, user)))
