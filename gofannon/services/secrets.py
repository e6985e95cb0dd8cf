"""secrets service. (Not built yet.)"""
