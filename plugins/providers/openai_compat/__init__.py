"""Bundled plugin openai_compat. (Not built yet.)"""
