"""voicegw: a self-hosted voice-AI SIP/RTP gateway."""

# Decide before any media module is imported whether its compiled extension or its source runs (gateway/native.py).
from gateway import native as native
