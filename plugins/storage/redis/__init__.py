"""Bundled plugin redis. (Not built yet.)"""
