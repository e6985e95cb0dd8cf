"""runs service. (Not built yet.)"""
