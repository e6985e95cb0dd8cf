"""Bundled plugin openai. (Not built yet.)"""
