"""The arq separation worker: a thin adapter between the queue, Telegram and `separation`."""
