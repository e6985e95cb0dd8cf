"""Bundled plugin oauth. (Not built yet.)"""
