"""Bundled plugin api_tokens. (Not built yet.)"""
