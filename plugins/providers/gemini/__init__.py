"""Bundled plugin gemini. (Not built yet.)"""
