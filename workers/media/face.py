"""Face analysis with mediapipe 0.10.14 (its models ship inside the wheel: nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Inner-lip landmarks of the 468-point face mesh.
UPPER_LIP, LOWER_LIP = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
FOREHEAD, CHIN = 10, 152
# Every landmark of mediapipe's FACEMESH_LIPS (outer and inner lip contours), in this fixed order.
LIP_LANDMARKS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191,
                 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)


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


class FaceAnalyzer:
    """Detection (how many faces, how big) and mesh (mouth pose) for a video, frame by frame.

    Not thread-safe: one analyser per video, closed after use.
    """

    def __init__(self, *, min_detection_confidence: float = 0.5):
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_detection_confidence
        )
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=False,
            min_detection_confidence=0.5, min_tracking_confidence=0.5,
        )

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
        return MouthPose(
            cx=float(centre[0]), cy=float(centre[1]), width=float(np.linalg.norm(right - left)),
            openness=opening / max(face_h, 1.0), face_height=face_h,
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
