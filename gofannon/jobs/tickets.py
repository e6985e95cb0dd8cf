"""tickets service. (Not built yet.)"""
