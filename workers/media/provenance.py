"""C2PA Content Credentials for archived segments and show recordings: sign a copy of an MP4, read one back.

Offline by construction: no timestamp authority, no OCSP, no remote manifests, and c2pa's HTTP client is
given an empty host allow-list. Every call builds its own `c2pa.Context` from a settings dict, so trust
anchors given to one reader never reach another (the process-global `c2pa.load_settings` is deprecated and
no longer read by Reader/Builder; it is not used here).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import c2pa

from studio.keys import ProvenanceKeys
from studio.storage import atomic_path

CLAIM_GENERATOR = "Ethical Clone Studio"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ACTIONS_LABELS = ("c2pa.actions.v2", "c2pa.actions")
ORIGIN_LABEL = "com.ethicalclonestudio.origin"
# C2PA 2.3 section 19.3.2.1 (live video, one manifest per segment); c2pa-rs 0.91 accepts the label as is.
LIVE_SEGMENT_LABEL = "c2pa.livevideo.segment"
CONTINUITY_MANIFEST_ID = "c2pa.manifestId"
# An ingredient assertion must hash-link the ingredient's own manifest, which needs the ingredient file;
# a show recording only knows its segments' manifest ids, so those go in an assertion of ours.
INGREDIENTS_LABEL = "com.ethicalclonestudio.ingredients"
MIME_TYPES = {".mp4": "video/mp4", ".m4v": "video/x-m4v", ".mov": "video/quicktime", ".m4a": "audio/mp4"}


class ProvenanceError(RuntimeError):
    """Signing or reading Content Credentials failed; the message names the file and the cause."""


@dataclass(frozen=True)
class ProvenanceReport:
    present: bool
    valid: bool = False  # claim signature and content hashes verify
    trusted: bool = False  # and the signing certificate chains to the given root
    manifest_id: str | None = None
    digital_source_type: str | None = None
    claim: dict | None = None
    sequence_number: int | None = None
    stream_id: str | None = None
    previous_manifest_id: str | None = None
    ingredient_manifest_ids: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # "code: explanation", e.g. "assertion.bmffHash.mismatch: ..."

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["ingredient_manifest_ids"] = list(self.ingredient_manifest_ids)
        data["errors"] = list(self.errors)
        return data


def build_manifest(
    *,
    title: str,
    mime_type: str,
    claim: dict,
    sequence_number: int | None = None,
    stream_id: str | None = None,
    previous_manifest_id: str | None = None,
    ingredient_manifest_ids: list[str] | None = None,
) -> dict:
    """The manifest definition c2pa's Builder signs (pure data, so tests can inspect it): a `c2pa.created`
    action of digital source type `trainedAlgorithmicMedia`, and for a live segment its sequence number and the
    previous segment's manifest id (POLICY M4)."""
    assertions = [
        {"label": ACTIONS_LABELS[0], "data": {"actions": [{
            "action": "c2pa.created",
            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": {"name": CLAIM_GENERATOR},
        }]}},
        {"label": ORIGIN_LABEL, "data": claim},
    ]
    if sequence_number is not None:
        segment = {"sequenceNumber": sequence_number, "streamId": stream_id,
                   "continuityMethod": CONTINUITY_MANIFEST_ID}
        if previous_manifest_id is not None:  # the first segment of a stream has no predecessor
            segment["previousManifestId"] = previous_manifest_id
        assertions.append({"label": LIVE_SEGMENT_LABEL, "data": segment})
    if ingredient_manifest_ids:
        assertions.append({"label": INGREDIENTS_LABEL, "data": {"manifestIds": list(ingredient_manifest_ids)}})
    return {
        "claim_generator_info": [{"name": CLAIM_GENERATOR}],
        "title": title,
        "format": mime_type,
        "assertions": assertions,
    }


def sign_media(
    src: Path,
    dst: Path,
    *,
    keys: ProvenanceKeys,
    title: str,
    claim: dict,
    sequence_number: int | None = None,
    stream_id: str | None = None,
    previous_manifest_id: str | None = None,
    ingredient_manifest_ids: list[str] | None = None,
) -> str:
    """Write `src` with an embedded manifest signed with the project's key to `dst` (atomically) and return the
    manifest id (POLICY M4)."""
    src, dst = Path(src), Path(dst)
    _check_inputs(keys, claim, sequence_number, stream_id, previous_manifest_id, ingredient_manifest_ids)
    if not src.is_file():
        raise ProvenanceError(f"cannot sign {src}: no such file")
    mime_type = _mime_type(src)
    manifest = build_manifest(title=title, mime_type=mime_type, claim=claim, sequence_number=sequence_number,
                              stream_id=stream_id, previous_manifest_id=previous_manifest_id,
                              ingredient_manifest_ids=ingredient_manifest_ids)
    with atomic_path(dst) as tmp:
        try:
            signer_info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, keys.chain_pem, keys.private_key_pem, None)
            with (
                c2pa.Signer.from_info(signer_info) as signer,
                _context(keys.root_pem) as ctx,
                c2pa.Builder(manifest, context=ctx) as builder,
                open(src, "rb") as source,
                open(tmp, "w+b") as dest,
            ):
                builder.sign(signer, mime_type, source, dest)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"c2pa could not sign {src}: {exc}") from None
        # Read back under our own root instead of c2pa's verify_after_sign: one more pass over the file
        # either way, and this one also proves the chain is trusted before anything is published.
        report = _read(tmp, mime_type, keys.root_pem, shown_as=dst)
        if not (report.present and report.trusted and report.manifest_id):
            problems = "; ".join(report.errors) or "no manifest found after signing"
            raise ProvenanceError(f"signed {dst} does not verify under its own root ({problems}); "
                                  "run `studio keys init --force` if the key files were mixed up")
    return report.manifest_id


def read_media(path: Path, *, trust_anchors_pem: bytes | None) -> ProvenanceReport:
    """What the file's active manifest says, and whether it verifies (and chains to `trust_anchors_pem`).

    A media file without Content Credentials gives present=False; a file c2pa cannot parse raises."""
    path = Path(path)
    if not path.is_file():
        raise ProvenanceError(f"cannot read Content Credentials of {path}: no such file")
    # An unknown suffix lets c2pa detect the container from the bytes.
    return _read(path, MIME_TYPES.get(path.suffix.lower()), trust_anchors_pem, shown_as=path)


def _read(path: Path, mime_type: str | None, trust_anchors_pem: bytes | None, *, shown_as: Path) -> ProvenanceReport:
    try:
        with _context(trust_anchors_pem) as ctx, open(path, "rb") as f:
            reader = c2pa.Reader.try_create(mime_type, f, None, ctx)
            if reader is None:
                return ProvenanceReport(present=False)
            with reader:
                store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"{shown_as} is not a media file c2pa can read: {exc}") from None
    return _report(store, verify_trust=trust_anchors_pem is not None)


def _report(store: dict, *, verify_trust: bool) -> ProvenanceReport:
    manifest_id = store.get("active_manifest")
    manifest = store.get("manifests", {}).get(manifest_id) or {}
    data = {a.get("label"): a.get("data") for a in manifest.get("assertions", [])}
    actions = next((data[label] for label in ACTIONS_LABELS if label in data), None) or {}
    created = next((a for a in actions.get("actions", []) if a.get("action") == "c2pa.created"), {})
    segment = data.get(LIVE_SEGMENT_LABEL) or {}
    ingredients = data.get(INGREDIENTS_LABEL) or {}
    state = store.get("validation_state")
    return ProvenanceReport(
        present=True,
        # "Valid": signature and hashes check out, whatever the trust verdict; "Trusted" adds the chain.
        valid=state in ("Valid", "Trusted"),
        trusted=verify_trust and state == "Trusted",
        manifest_id=manifest_id,
        digital_source_type=created.get("digitalSourceType"),
        claim=data.get(ORIGIN_LABEL),
        sequence_number=segment.get("sequenceNumber"),
        stream_id=segment.get("streamId"),
        previous_manifest_id=segment.get("previousManifestId"),
        ingredient_manifest_ids=tuple(ingredients.get("manifestIds", [])),
        errors=tuple(_failures(store)),
    )


def _failures(store: dict) -> list[str]:
    results = store.get("validation_results") or {}
    statuses = list((results.get("activeManifest") or {}).get("failure", []))
    for delta in results.get("ingredientDeltas") or []:
        statuses += (delta.get("validationDeltas") or {}).get("failure", [])
    if not results:  # older stores carry only the flat list
        statuses = store.get("validation_status") or []
    return [f"{s['code']}: {s['explanation']}" if s.get("explanation") else str(s.get("code")) for s in statuses]


def _context(trust_anchors_pem: bytes | None) -> c2pa.Context:
    verify = {
        # Without anchors there is nothing to chain to; report trusted=False rather than an error.
        "verify_trust": trust_anchors_pem is not None,
        "verify_after_sign": False,  # sign_media reads the result back under the root itself
        "ocsp_fetch": False,
        "remote_manifest_fetch": False,
    }
    settings: dict = {
        "verify": verify,
        "core": {"allowed_network_hosts": []},  # an empty list denies every host
        "builder": {"thumbnail": {"enabled": False}},
    }
    if trust_anchors_pem is not None:
        # trust_anchors replaces c2pa's built-in list (user_anchors would add to it): trusted means ours.
        settings["trust"] = {"trust_anchors": trust_anchors_pem.decode("ascii")}
    return c2pa.Context.from_dict(settings)


def _mime_type(path: Path) -> str:
    try:
        return MIME_TYPES[path.suffix.lower()]
    except KeyError:
        raise ProvenanceError(f"cannot sign {path}: unsupported format {path.suffix!r}; "
                              f"supported: {', '.join(sorted(MIME_TYPES))}") from None


def _check_inputs(keys, claim, sequence_number, stream_id, previous_manifest_id, ingredient_manifest_ids) -> None:
    if not isinstance(keys, ProvenanceKeys):
        raise ProvenanceError(f"no provenance keys (got {type(keys).__name__}); run `studio keys init` and pass "
                              "studio.keys.load_provenance_keys(settings)")
    if not isinstance(claim, dict):
        raise ValueError(f"claim must be a dict, got {type(claim).__name__}")
    try:
        json.dumps(claim)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"claim must be JSON-serialisable: {exc}") from None
    if sequence_number is None:
        if stream_id is not None or previous_manifest_id is not None:
            raise ValueError("stream_id and previous_manifest_id need a sequence_number (live segment chaining)")
    else:
        if isinstance(sequence_number, bool) or not isinstance(sequence_number, int) or sequence_number < 0:
            raise ValueError(f"sequence_number must be an int >= 0, got {sequence_number!r}")
        if not stream_id:
            raise ValueError(f"a live segment (sequence_number={sequence_number}) needs a stream_id, got {stream_id!r}")
    if ingredient_manifest_ids is not None and not all(isinstance(i, str) and i for i in ingredient_manifest_ids):
        raise ValueError(f"ingredient_manifest_ids must be non-empty strings, got {ingredient_manifest_ids!r}")
