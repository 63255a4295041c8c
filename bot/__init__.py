"""The Telegram front end: handlers, keyboards, texts, the queue client and the job watcher.

It never imports torch, demucs or the worker: the bot image has none of them.
"""
