"""Bundled plugin firebase. (Not built yet.)"""
