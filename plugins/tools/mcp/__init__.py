"""Bundled plugin mcp. (Not built yet.)"""
