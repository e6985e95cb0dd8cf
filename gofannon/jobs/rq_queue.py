"""RQ job queue (REDIS_URL). (Not built yet.)"""
