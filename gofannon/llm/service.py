"""service service. (Not built yet.)"""
