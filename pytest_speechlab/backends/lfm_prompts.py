"""LFM2-Audio's system prompts and voices, shared by the backend (:mod:`.lfm`) and the tiny test model's
builder (:mod:`.lfm_tiny`), so that neither imports the other back."""

from __future__ import annotations

# System prompts from the liquid-audio README (ASR, TTS voices, interleaved chat).
ASR_SYSTEM_PROMPT = "Perform ASR."
TTS_SYSTEM_PROMPT = "Perform TTS. Use the {voice} voice."
VOICES = ("US male", "US female", "UK male", "UK female")
DEFAULT_VOICE = "US male"
CHAT_SYSTEM_PROMPT = "Respond with interleaved text and audio."
