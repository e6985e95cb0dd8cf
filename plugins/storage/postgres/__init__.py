"""Bundled plugin postgres. (Not built yet.)"""
