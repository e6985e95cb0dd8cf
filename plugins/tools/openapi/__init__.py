"""Bundled plugin openapi. (Not built yet.)"""
