"""The stem picker's buttons: toggle a source, pick all, separate."""

from __future__ import annotations

from telegram import CallbackQuery, ReplyParameters, Update

from bot import texts
from bot.handlers.context import Context, pressed_request, services_of
from bot.keyboards import picker_keyboard
from bot.separations import (
    NotStarted,
    PlannedJob,
    Queued,
    enqueue_separation,
    plan_separation,
)
from bot.user_settings import output_format_of
from common.callback_data import Action
from common.i18n import Language, translate
from common.telegram import edit_message
from separation.formats import OutputFormat
from separation.tracks import SOURCES
from storage import Request


async def toggle_source(update: Update, context: Context) -> None:
    """A source's button: flip it in the pick."""
    await _change_pick(update, context)


async def pick_all(update: Update, context: Context) -> None:
    """`All`: pick the six sources."""
    await _change_pick(update, context)


async def _change_pick(update: Update, context: Context) -> None:
    pressed = await pressed_request(update, context)
    if pressed is None:
        return
    query, data, request, lang = pressed
    db = services_of(context).db
    if data.action is Action.ALL:
        picked = await db.set_selection(request.id, SOURCES)
    else:
        assert data.arg is not None  # the toggle pattern requires a source
        picked = await db.toggle_source(request.id, data.arg)
    await _redraw(query, request, picked, await output_format_of(db, request.user_id), lang)


async def separate(update: Update, context: Context) -> None:
    """`Separate`: queue the pick with a status message, or say why not."""
    pressed = await pressed_request(update, context)
    if pressed is None:
        return
    query, _, request, lang = pressed
    services = services_of(context)
    planned = await plan_separation(
        services.db,
        services.queue,
        request,
        max_active_jobs=services.settings.max_active_jobs_per_user,
        language=lang,
        experiment=services.experiment,
    )
    if isinstance(planned, NotStarted):
        await _answer_not_started(query, planned, services.settings.max_active_jobs_per_user, lang)
        return
    await _post_and_enqueue(query, context, request, planned)


async def _post_and_enqueue(
    query: CallbackQuery, context: Context, request: Request, planned: PlannedJob
) -> None:
    services = services_of(context)
    lang = planned.language
    status = await query.get_bot().send_message(
        request.chat_id,
        texts.queued(planned.position, lang),
        reply_parameters=ReplyParameters(request.message_id, allow_sending_without_reply=True),
    )
    outcome = await enqueue_separation(
        services.db, services.queue, request, planned, status.message_id
    )
    if isinstance(outcome, Queued):
        # Workers took jobs ahead while the status was being sent: show where it is now.
        if outcome.position is not None and outcome.position != planned.position:
            await edit_message(
                status.edit_text(texts.queued(outcome.position, lang)),
                {"user_id": request.user_id},
            )
        await query.answer()
        return
    if outcome is NotStarted.ALREADY_QUEUED:
        await status.delete()
    elif outcome is NotStarted.QUEUE_DOWN:
        await edit_message(
            status.edit_text(translate(texts.QUEUE_DOWN, lang)), {"user_id": request.user_id}
        )
    await _answer_not_started(query, outcome, services.settings.max_active_jobs_per_user, lang)


async def _answer_not_started(
    query: CallbackQuery, reason: NotStarted, max_jobs: int, lang: Language
) -> None:
    text, alert = texts.not_started(reason, max_jobs, lang)
    await query.answer(text, show_alert=alert)


async def _redraw(
    query: CallbackQuery,
    request: Request,
    picked: frozenset[str],
    fmt: OutputFormat,
    lang: Language,
) -> None:
    try:
        await edit_message(
            query.edit_message_text(
                texts.picker_text(request.song_name, picked, fmt, lang),
                reply_markup=picker_keyboard(request.id, picked, lang),
            ),
            {"user_id": request.user_id, "request_id": request.id},
        )
    finally:
        await query.answer()
