"""Bundled plugin anthropic. (Not built yet.)"""
