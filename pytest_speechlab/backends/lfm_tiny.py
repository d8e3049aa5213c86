"""A tiny LFM2-Audio model built offline, so CI runs the liquid-audio backend's real code paths.

The real ``LiquidAI/LFM2.5-Audio-1.5B`` weights are not on PyPI, so the project's own tests build a
model of the same architecture (``LFM2AudioModel`` from liquid-audio's own config classes, with an
LFM2 backbone, a Conformer audio encoder, a depthformer and an LFM2 audio detokenizer) at 3.4 M
parameters (mostly the 8 x 2049 audio-code embeddings), plus a 10 M-parameter detokenizer (its
512-wide embedding and head are hard-coded upstream; stored in float16, about 34 MB in all), plus a
byte-level tokenizer that puts the special tokens where liquid-audio's generation loops expect them
(``<|im_end|>`` = 7, ``<|audio_start|>`` = 128, ``<|text_end|>`` = 130).

Weights are random (seeded), then fitted for 40 optimiser steps (about 3 s on one core) on synthetic
prompts so that the model follows the *control protocol* of the real one: after a "Perform TTS."
prompt it emits ``<|audio_start|>`` (otherwise ``generate_sequential`` would never reach audio and
the TTS path - detokenizer, device placement - would go untested), after "Perform ASR." it writes a
few words and ``<|im_end|>``, and in interleaved chat it writes text before audio.  What it says is
meaningless; tests assert structure (types, shapes, rates, token counts), never WER.

Nothing here is imported at plugin import time: torch, transformers, tokenizers and liquid_audio
are imported inside the functions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from .lfm_prompts import (
    ASR_SYSTEM_PROMPT,
    CHAT_SYSTEM_PROMPT,
    DEFAULT_VOICE,
    TTS_SYSTEM_PROMPT,
    VOICES,
)

TINY_NAME = "tiny-random"
# Bump when the recipe below changes so stale cached builds are not reused.
BUILD_VERSION = 3
SEED = 0

# Special tokens at the ids hard-coded in liquid_audio/model/lfm2_audio.py (7, 128, 130) and the ones
# ChatState writes (<|startoftext|>, <|im_start|>, <|im_end|>).
N_RESERVED = 160
SPECIAL_TOKENS = {
    0: "<|pad|>",
    1: "<|startoftext|>",
    2: "<|endoftext|>",
    6: "<|im_start|>",
    7: "<|im_end|>",
    128: "<|audio_start|>",
    129: "<|audio_end|>",
    130: "<|text_end|>",
}

# The tiny model is fitted to the system prompts the backend uses by default.
ASR_PROMPT = ASR_SYSTEM_PROMPT
TTS_PROMPT = TTS_SYSTEM_PROMPT.format(voice=DEFAULT_VOICE)
CHAT_PROMPT = CHAT_SYSTEM_PROMPT
ASR_ANSWER = "hello world"
CHAT_ANSWER = "hi there"

PREPROCESSOR: dict[str, Any] = {
    "sample_rate": 16000,
    "normalize": "per_feature",
    "window_size": 0.025,
    "window_stride": 0.01,
    "window": "hann",
    "features": 128,  # ChatState and _prefill assert 128 mel bins
    "n_fft": 512,
    "log": True,
    "frame_splicing": 1,
    "dither": 0.0,  # no dither: deterministic features
    "pad_to": 0,
    "pad_value": 0.0,
}


def _config(vocab_size: int) -> dict[str, Any]:
    """config.json of the tiny model, in the layout LFM2AudioModel.from_pretrained reads."""
    encoder = {
        "feat_in": 128,
        "feat_out": -1,
        "n_layers": 1,
        "d_model": 32,
        "subsampling": "dw_striding",
        "subsampling_factor": 8,  # mel2emb_len assumes 8x subsampling
        "subsampling_conv_channels": 16,
        "causal_downsampling": False,
        "reduction": None,
        "reduction_position": None,
        "reduction_factor": 1,
        "ff_expansion_factor": 2,
        "self_attention_model": "rel_pos",
        "n_heads": 2,
        "att_context_size": [-1, -1],
        "xscaling": False,
        "untie_biases": True,
        "pos_emb_max_len": 5000,
        "conv_kernel_size": 9,
        "conv_norm_type": "batch_norm",
        "conv_context_size": None,
        "dropout": 0.0,
        "dropout_pre_encoder": 0.0,
        "dropout_emb": 0.0,
        "dropout_att": 0.0,
    }
    lfm = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "layer_types": ["conv", "full_attention"],  # one of each LFM2 block kind
        "max_position_embeddings": 4096,
        "norm_eps": 1e-5,
        "conv_L_cache": 3,
        "block_auto_adjust_ff_dim": False,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 7,
        "pad_token_id": 0,
    }
    return {
        "architectures": ["LFM2AudioModel"],
        "codebooks": 8,
        "tie_audio_embeddings": False,
        "semantic_codebook_factor": 100,
        "codebook_weight": "log",
        "interleaved_n_text": 6,
        "interleaved_n_audio": 12,
        "preprocessor": PREPROCESSOR,
        "encoder": encoder,
        "lfm": lfm,
        # MHA in the depthformer uses 32 heads: dim must be a multiple of 32.
        "depthformer": {"layers": 1, "dim": 64, "tie": True},
    }


def _detokenizer_config() -> dict[str, Any]:
    """audio_detokenizer/config.json: LFM2AudioDetokenizer hard-codes a 512-wide embedding and head."""
    return {
        "model_type": "lfm2",
        "vocab_size": 16,  # unused by the detokenizer (it feeds embeddings), kept tiny
        "hidden_size": 512,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        # the llama.cpp-style name the processor renames to full_attention (processor.py:136-149)
        "layer_types": ["sliding_attention"],
        "sliding_window": 30,
        "max_position_embeddings": 4096,
        "norm_eps": 1e-5,
        "conv_L_cache": 3,
        "block_auto_adjust_ff_dim": False,
    }


def build_tokenizer(out_dir: Path) -> int:
    """Write a byte-level BPE tokenizer (no merges) with the LFM2 special-token ids; return its size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {SPECIAL_TOKENS.get(i, f"<|reserved_{i}|>"): i for i in range(N_RESERVED)}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in list(vocab)[:N_RESERVED]])
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|im_end|>", pad_token="<|pad|>"
    )
    fast.save_pretrained(str(out_dir))
    return len(vocab)


def _fit_control_protocol(model: Any, processor: Any, steps: int, seed: int) -> dict[str, float]:
    """Fit the random model for ``steps`` Adam steps so it follows the real model's control tokens."""
    import torch
    from liquid_audio import ChatState
    from liquid_audio.utils import LFMModality
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    words = [
        "the",
        "a",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "red",
        "blue",
        "sun",
        "rain",
        "speech",
        "test",
        "model",
        "one",
        "two",
        "three",
    ]

    def rand_text() -> str:
        n = int(torch.randint(1, 6, (1,), generator=gen))
        return " ".join(words[int(i)] for i in torch.randint(len(words), (n,), generator=gen))

    def rand_audio() -> torch.Tensor:
        n = int(torch.randint(4000, 24000, (1,), generator=gen))
        return torch.randn(1, n, generator=gen) * 0.1

    def prompt(system: str, text: str | None = None, audio: torch.Tensor | None = None) -> Any:
        chat = ChatState(processor, dtype=torch.float32)
        chat.new_turn("system")
        chat.add_text(system)
        chat.end_turn()
        chat.new_turn("user")
        if audio is not None:
            chat.add_audio(audio, 16000)
        if text is not None:
            chat.add_text(text)
        chat.end_turn()
        chat.new_turn("assistant")
        return chat

    enc = processor.text.encode
    asr_target = enc(ASR_ANSWER, add_special_tokens=False) + [7]
    chat_target = enc(CHAT_ANSWER, add_special_tokens=False)[:6]  # the first interleaved text block
    examples: list[tuple[Any, list[int]]] = []
    for voice in VOICES:  # every TTS voice prompt must lead to <|audio_start|>
        examples.append((prompt(TTS_SYSTEM_PROMPT.format(voice=voice), text=rand_text()), [128]))
    for _ in range(2):
        examples += [
            (prompt(ASR_PROMPT, audio=rand_audio()), asr_target),
            (prompt(CHAT_PROMPT, text=rand_text()), chat_target),
            (prompt(CHAT_PROMPT, audio=rand_audio()), chat_target),
        ]
    # eval(): the Conformer's batch norm keeps its running statistics; gradients still flow.
    model.eval()
    # Only the backbone and the text embeddings are fitted: the control tokens depend on the prompt,
    # and the random audio encoder's output can stay fixed.  So audio embeddings are computed once
    # (as _prefill does: conformer, then adapter) and each step only rebuilds the text embeddings.
    for p in (*model.conformer.parameters(), *model.audio_adapter.parameters()):
        p.requires_grad_(False)
    hidden_size = model.lfm.config.hidden_size
    inputs = []
    with torch.no_grad():
        for chat, target in examples:
            text = torch.cat([chat.text, torch.tensor([target[:-1]], dtype=torch.long)], 1)[0]
            flags = torch.cat([chat.modality_flag, torch.full((1, len(target) - 1), int(LFMModality.TEXT))], 1)[0]
            audio_emb = torch.zeros((0, hidden_size))
            if chat.audio_in_lens.numel():
                feats = chat.audio_in.mT.unsqueeze(0).mT  # (1, 128, T): one clip per example
                enc_out, enc_len = model.conformer(feats, chat.audio_in_lens)
                audio_emb = model.audio_adapter(enc_out[0, :, : int(enc_len[0])].mT)
            assert audio_emb.shape[0] == int((flags == LFMModality.AUDIO_IN).sum())
            inputs.append((text, flags, audio_emb, target))
    longest = max(int(flags.shape[0]) for _, flags, _, _ in inputs)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    first = last = float("nan")
    for step in range(steps):
        opt.zero_grad()
        rows = []
        for text, flags, audio_emb, _ in inputs:
            # Teacher forcing: the prompt plus all but the last target token, scored on the target.
            emb = torch.zeros((longest, hidden_size))
            emb[: flags.shape[0]][flags == LFMModality.TEXT] = model.lfm.embed_tokens(text)
            emb[: flags.shape[0]][flags == LFMModality.AUDIO_IN] = audio_emb
            rows.append(emb)
        # Right-padded batch: the backbone is causal, so padding after a position cannot change it.
        hidden = model.lfm(inputs_embeds=torch.stack(rows), use_cache=False).last_hidden_state
        losses = []
        for i, (_, flags, _, target) in enumerate(inputs):
            end = int(flags.shape[0])
            logits = nn.functional.linear(hidden[i, end - len(target) : end], model.lfm.embed_tokens.weight)
            losses.append(nn.functional.cross_entropy(logits, torch.tensor(target)))
        loss = torch.stack(losses).mean()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        if step == 0:
            first = loss.item()
        last = loss.item()
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    return {"loss_first": first, "loss_last": last}


def build_tiny_model(out_dir: Path, *, seed: int = SEED, fit_steps: int = 40) -> dict[str, Any]:
    """Build the tiny model into ``out_dir`` (created) and return build info (timings, sizes)."""
    import torch
    from liquid_audio.detokenizer import LFM2AudioDetokenizer
    from liquid_audio.model.conformer.encoder import ConformerEncoderConfig
    from liquid_audio.model.lfm2_audio import (
        DepthformerConfig,
        LFM2AudioConfig,
        LFM2AudioModel,
    )
    from liquid_audio.processor import LFM2AudioProcessor, PreprocessorConfig
    from safetensors.torch import save_file
    from transformers import Lfm2Config

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_size = build_tokenizer(out_dir)
    cfg = _config(vocab_size)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))

    # The RNG state is saved and restored so building the model does not disturb the caller's seeds.
    rng_state = torch.get_rng_state()
    threads = torch.get_num_threads()
    try:
        # One thread: these ops are far too small to gain from more, and on a shared, busy machine
        # intra-op threads spin-wait (the fit measured 2.4 s on 1 thread vs 15 s on 2).  It also
        # keeps the fitted weights independent of the machine's core count.
        torch.set_num_threads(1)
        torch.manual_seed(seed)
        rest = {k: v for k, v in cfg.items() if k not in ("lfm", "encoder", "depthformer")}
        conf = LFM2AudioConfig(
            lfm=Lfm2Config(**cfg["lfm"]),
            encoder=ConformerEncoderConfig(**cfg["encoder"]),
            depthformer=DepthformerConfig(**cfg["depthformer"]),
            **rest,
        )
        model = LFM2AudioModel(conf).to(torch.float32)
        # Explicit cpu: the processor's own default device is "cuda" (processor.py:61).
        processor = LFM2AudioProcessor(
            text_tokenizer_path=str(out_dir), audio_processor_config=PreprocessorConfig(**PREPROCESSOR)
        ).to("cpu")
        fit = _fit_control_protocol(model, processor, fit_steps, seed)
        # accelerate's load_checkpoint_in_model needs the {"format": "pt"} metadata; tied weights
        # (shared storage) are stored once, clones keep safetensors from refusing shared tensors.
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

        detok_dir = out_dir / "audio_detokenizer"
        detok_dir.mkdir()
        dcfg = _detokenizer_config()
        (detok_dir / "config.json").write_text(json.dumps(dcfg, indent=2))
        detok = LFM2AudioDetokenizer(Lfm2Config(**{**dcfg, "layer_types": ["full_attention"]}))
        # float16 on disk halves the file; load_state_dict casts back to the module's float32.
        dstate = {k: v.detach().to(torch.float16).contiguous().clone() for k, v in detok.state_dict().items()}
        save_file(dstate, str(detok_dir / "model.safetensors"), metadata={"format": "pt"})
    finally:
        torch.set_rng_state(rng_state)
        torch.set_num_threads(threads)

    info = {
        "name": TINY_NAME,
        "build_version": BUILD_VERSION,
        "seed": seed,
        "fit_steps": fit_steps,
        **fit,
        "params": sum(p.numel() for p in model.parameters()),
        "detokenizer_params": sum(p.numel() for p in detok.parameters()),
        "build_seconds": round(time.perf_counter() - t0, 3),
    }
    (out_dir / "tiny_build.json").write_text(json.dumps(info, indent=2))
    return info


def _cache_key() -> str:
    from importlib.metadata import version

    return f"lfm-tiny-random-v{BUILD_VERSION}-la{version('liquid-audio')}-tf{version('transformers')}-seed{SEED}"


def tiny_model_dir(root: Path | None = None) -> Path:
    """The tiny model's folder under ``root`` (default: the speechlab cache), built once and reused.

    The build goes to a temporary folder beside the target and is renamed into place, so a crash
    never leaves a half-written model and two processes racing each get a complete one.
    """
    if root is None:
        from .weights import cache_dir

        root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / _cache_key()
    if (target / "tiny_build.json").is_file():
        return target
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        build_tiny_model(tmp)
        try:
            os.replace(tmp, target)  # atomic on POSIX when target is absent or an empty dir
        except OSError:
            if not (target / "tiny_build.json").is_file():
                raise
            # another process finished first: keep its copy
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
