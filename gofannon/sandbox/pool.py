"""pool service. (Not built yet.)"""
