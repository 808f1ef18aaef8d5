"""Face analysis with mediapipe 0.10.14 (its models ship inside the wheel: nothing is downloaded)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# Inner-lip landmarks of the 468-point face mesh.
UPPER_LIP, LOWER_LIP = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
FOREHEAD, CHIN = 10, 152
# Every landmark of mediapipe's FACEMESH_LIPS (outer and inner lip contours), in this fixed order.
LIP_LANDMARKS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
                 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)


# Nose tip, chin, eye outer corners, mouth corners, and where they sit on an average face (mm; x right,
# y down, z away from the camera), for solvePnP.
POSE_LANDMARKS = (1, 152, 33, 263, 61, 291)
POSE_MODEL = np.array([(0.0, 0.0, 0.0), (0.0, 63.6, 12.5), (-43.3, -32.7, 26.0), (43.3, -32.7, 26.0),
                       (-28.9, 28.9, 24.1), (28.9, 28.9, 24.1)])


def head_pose(points: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """(yaw, pitch) in degrees from the six POSE_LANDMARKS in pixels; (0, 0) when no pose is found."""
    import cv2

    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(POSE_MODEL, points.astype(np.float64), camera, None,
                               flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return 0.0, 0.0
    angles = cv2.RQDecomp3x3(cv2.Rodrigues(rvec)[0])[0]
    return float(angles[1]), float(angles[0])


@dataclass(frozen=True)
class FaceBox:
    """Relative box (0..1 of width/height) and detector score."""

    x: float
    y: float
    w: float
    h: float
    score: float


@dataclass(frozen=True)
class MouthPose:
    """Mouth geometry in pixels of the analysed frame, and openness as a share of face height."""

    cx: float
    cy: float
    width: float
    openness: float
    face_height: float
    yaw: float = 0.0    # head pose in degrees (solvePnP against a generic face model)
    pitch: float = 0.0
    roll: float = 0.0   # in-plane tilt of the mouth line, degrees, clockwise as displayed
    eye_dist: float = 0.0  # outer eye corners apart, pixels: the face's scale, whatever the mouth does


# What mediapipe's native code writes straight to the process's stderr (fd 2) when a graph starts and first runs,
# whatever the log settings (GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL change nothing): start-up notes, not
# problems. They filled `studio demo`'s screen (the consent check runs in its process) and every worker's log.
NATIVE_NOISE = ("Created TensorFlow Lite XNNPACK delegate", "All log messages before absl::InitializeLog()",
                "inference_feedback_manager.cc")
_STDERR_LOCK = threading.RLock()  # nested use passes the lines on to the outer one
# protobuf's notice, on the first face found, that mediapipe 0.10.14 calls a deprecated function of it: not ours to
# act on, and it printed in the middle of `studio demo`'s consent check.
warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated", category=UserWarning)


@contextlib.contextmanager
def native_notes_held_back(noise: tuple[str, ...] = NATIVE_NOISE) -> Iterator[None]:
    """While inside, fd 2 goes to a temporary file; on the way out every line written there is passed on to the
    real stderr, in order, except those naming one of `noise`. Other threads' stderr is delayed, never lost."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not any(n.encode() in line for n in noise)]
            if kept:
                os.write(2, b"".join(kept))


def started(make):
    """The mediapipe graph `make()` returns, made and run once on a blank frame with the native start-up notes held
    back: they come as a graph starts and first runs. No face is found, so a tracking mesh carries nothing into
    the next frame."""
    with native_notes_held_back():
        graph = make()
        graph.process(np.zeros((64, 64, 3), np.uint8))
    return graph


def face_mesh(**options):
    """mediapipe's FaceMesh with `options`, made and started quietly (`started`)."""
    import mediapipe as mp

    return started(lambda: mp.solutions.face_mesh.FaceMesh(**options))


class FaceAnalyzer:
    """Detection (how many faces, how big) and mesh (mouth pose) for a video, frame by frame.

    Not thread-safe: one analyser per video, closed after use.
    """

    def __init__(self, *, min_detection_confidence: float = 0.5):
        import mediapipe as mp

        self._det = started(lambda: mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_detection_confidence))
        self._mesh = face_mesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                               min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        res = self._det.process(rgb)
        boxes = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append(FaceBox(b.xmin, b.ymin, b.width, b.height, float(d.score[0])))
        return boxes

    def mouth(self, rgb: np.ndarray) -> MouthPose | None:
        res = self._mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark

        def pt(i: int) -> np.ndarray:
            return np.array([lm[i].x * w, lm[i].y * h])

        face_h = float(np.linalg.norm(pt(FOREHEAD) - pt(CHIN)))
        left, right = pt(MOUTH_LEFT), pt(MOUTH_RIGHT)
        centre = (left + right + pt(UPPER_LIP) + pt(LOWER_LIP)) / 4
        opening = float(np.linalg.norm(pt(UPPER_LIP) - pt(LOWER_LIP)))
        yaw, pitch = head_pose(np.array([pt(i) for i in POSE_LANDMARKS]), w, h)
        return MouthPose(
            cx=float(centre[0]), cy=float(centre[1]), width=float(np.linalg.norm(right - left)),
            openness=opening / max(face_h, 1.0), face_height=face_h, yaw=yaw, pitch=pitch,
            roll=float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0]))),
            eye_dist=float(np.linalg.norm(pt(263) - pt(33))),
        )

    def lip_landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        """(len(LIP_LANDMARKS), 2) pixel coordinates of the lip landmarks, in LIP_LANDMARKS order; None
        when no face mesh is found. Shares the mesh tracker with `mouth`: call one of the two per frame."""
        res = self._mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        return np.array([(lm[i].x * w, lm[i].y * h) for i in LIP_LANDMARKS], dtype=np.float64)

    def close(self) -> None:
        self._det.close()
        self._mesh.close()

    def __enter__(self) -> FaceAnalyzer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
