"""Telegram front end: handlers, keyboards, texts, the queue client and the arq worker task."""
