"""What the bot and the worker both speak: settings, logging, the job contract, Telegram rules.

Torch-free; it depends only on the torch-free rules of :mod:`separation`.
"""
