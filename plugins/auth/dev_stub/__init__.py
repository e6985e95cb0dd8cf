"""Bundled plugin dev_stub. (Not built yet.)"""
