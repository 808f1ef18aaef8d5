"""Read an encoded segment back before it is stamped: the stamp vouches for what is in the bytes, not for
what the middleware meant to put there (fail closed, DESIGN invariant 1)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from studio.policy import verify_aigc_metadata
from workers.media.allocator import decoding
from workers.media.watermark import Mark, WatermarkDetector

# Frames decoded for the check: enough for the watermark to decode with a wide margin, few enough that the
# check costs a small share of the encode.
CHECK_FRAMES = 25


class MarksMissing(RuntimeError):
    """The encoded file lacks a mark the middleware applied; the segment fails instead of being stamped."""


def check_encoded(path: Path, *, key: bytes, produce_id: str, mark: Mark, badge_box: tuple[int, int, int, int],
                  expected: dict[int, np.ndarray]) -> None:
    """Raise MarksMissing unless `path` carries valid AIGC metadata for `produce_id`, the watermark `mark`,
    and the badge region of the frames in `expected` (index -> the RGB frame handed to the encoder)."""
    with decoding(av.open(str(path))) as container:
        meta = {k.lower(): v for k, v in container.metadata.items()}
        if "aigc" not in meta:
            raise MarksMissing(f"{path.name}: no AIGC key in the container metadata")
        try:
            data = verify_aigc_metadata(key, meta["aigc"])
        except ValueError as exc:
            raise MarksMissing(f"{path.name}: {exc}") from None
        if data["ProduceID"] != produce_id:
            raise MarksMissing(f"{path.name}: AIGC ProduceID is {data['ProduceID']!r}, expected {produce_id!r}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        detector = WatermarkDetector(key)
        x, y, w, h = badge_box
        for i, frame in enumerate(container.decode(stream)):
            if i >= CHECK_FRAMES:
                break
            rgb = frame.to_ndarray(format="rgb24")
            detector.add_frame(rgb)
            if i in expected:
                got = rgb[y:y + h, x:x + w].astype(np.float32)
                want = expected[i][y:y + h, x:x + w].astype(np.float32)
                mse = float(np.mean((got - want) ** 2))
                psnr = 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
                if psnr < 24.0:
                    raise MarksMissing(f"{path.name}: badge region of frame {i} differs from the labelled frame "
                                       f"(PSNR {psnr:.1f} dB < 24)")
    result = detector.result()
    if not result.found or result.mark != mark:
        raise MarksMissing(f"{path.name}: watermark not read back (found={result.found}, "
                           f"bit errors {result.bit_errors}/{result.coded_bits})")
