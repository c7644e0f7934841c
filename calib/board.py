"""ChArUco boards: spec parsing, OpenCV board objects, printable rendering at true scale, detection.

Spec: `charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT`, e.g. `charuco:9,6,0.035,0.026,DICT_5X5_100`.
Board frame (OpenCV): origin at the outer top-left corner of the board, x along SQUARES_X, y along SQUARES_Y,
z into the board; chessboard corner id k sits at ((k % (SX-1)) + 1, (k // (SX-1)) + 1) * SQUARE_M.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from calib.errors import BoardNotFoundError, BoardSpecError, MissingDependencyError, require_cv2

log = logging.getLogger(__name__)

EXAMPLE_SPEC = "charuco:9,6,0.035,0.026,DICT_5X5_100"
MIN_CORNERS = 6  # fewer chessboard corners than this and a view is not usable


@dataclass(frozen=True)
class BoardSpec:
    squares_x: int
    squares_y: int
    square_m: float
    marker_m: float
    dictionary: str

    def __str__(self) -> str:
        return f"charuco:{self.squares_x},{self.squares_y},{self.square_m:g},{self.marker_m:g},{self.dictionary}"

    @property
    def n_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def corners_3d(self) -> np.ndarray:
        """(N, 3) chessboard corners in the board frame, metres, indexed by ChArUco corner id."""
        nx = self.squares_x - 1
        k = np.arange(self.n_corners)
        return np.stack([(k % nx + 1) * self.square_m, (k // nx + 1) * self.square_m, np.zeros(len(k))], axis=1)


def parse_board(spec: str) -> BoardSpec:
    """Parse and validate a board spec string; BoardSpecError says which field is wrong."""
    hint = f"expected charuco:SQUARES_X,SQUARES_Y,SQUARE_M,MARKER_M,DICT (e.g. {EXAMPLE_SPEC})"
    if not isinstance(spec, str) or ":" not in spec:
        raise BoardSpecError(f"board spec {spec!r}: {hint}")
    kind, _, rest = spec.strip().partition(":")
    if kind.lower() != "charuco":
        raise BoardSpecError(f"board spec {spec!r}: board type {kind!r} is not supported; {hint}")
    parts = [p.strip() for p in rest.split(",")]
    if len(parts) != 5:
        raise BoardSpecError(f"board spec {spec!r} has {len(parts)} fields, {hint}")
    try:
        sx, sy = int(parts[0]), int(parts[1])
        sq, mk = float(parts[2]), float(parts[3])
    except ValueError as exc:
        raise BoardSpecError(f"board spec {spec!r}: {exc}; {hint}") from exc
    if sx < 3 or sy < 3:
        raise BoardSpecError(f"board spec {spec!r}: need at least 3x3 squares, got {sx}x{sy}")
    if not (0 < sq < 1.0):
        raise BoardSpecError(f"board spec {spec!r}: SQUARE_M={sq} must be in metres (0 < SQUARE_M < 1), e.g. 0.035")
    if not (0 < mk < sq):
        raise BoardSpecError(f"board spec {spec!r}: MARKER_M={mk} must be positive and smaller than SQUARE_M={sq}")
    dict_name = parts[4].upper()
    if not dict_name.startswith("DICT_"):
        dict_name = "DICT_" + dict_name
    cv2 = _cv2_or_none()
    if cv2 is not None:
        if not hasattr(cv2.aruco, dict_name):
            raise BoardSpecError(f"board spec {spec!r}: unknown ArUco dictionary {parts[4]!r}; use e.g. DICT_5X5_100")
        n_markers = (sx * sy) // 2
        size = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dict_name)).bytesList.shape[0]
        if n_markers > size:
            raise BoardSpecError(
                f"board spec {spec!r}: a {sx}x{sy} board needs {n_markers} markers but {dict_name} has {size}; "
                "use a larger dictionary (e.g. DICT_5X5_250)"
            )
    return BoardSpec(sx, sy, sq, mk, dict_name)


def _cv2_or_none():
    try:
        return require_cv2()
    except MissingDependencyError:
        return None


def as_spec(board: BoardSpec | str) -> BoardSpec:
    return board if isinstance(board, BoardSpec) else parse_board(board)


def make_board(spec: BoardSpec | str):
    """The cv2.aruco.CharucoBoard for a spec (current, non-legacy OpenCV >= 4.6 layout)."""
    cv2 = require_cv2()
    spec = as_spec(spec)
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    return cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_m, spec.marker_m, dictionary)


def render_board(spec: BoardSpec | str, px_per_square: int = 100, margin_squares: float = 0.0) -> np.ndarray:
    """Grayscale uint8 image of the board at exactly `px_per_square` pixels per square (plus a white margin)."""
    spec = as_spec(spec)
    margin = int(round(margin_squares * px_per_square))
    w = spec.squares_x * px_per_square + 2 * margin
    h = spec.squares_y * px_per_square + 2 * margin
    return make_board(spec).generateImage((w, h), marginSize=margin, borderBits=1)


PAPER_MM = {"A4": (210, 297), "Letter": (215.9, 279.4), "A3": (297, 420), "A2": (420, 594)}


def write_printable(spec: BoardSpec | str, out_prefix: str, dpi: int = 300, margin_mm: float = 15.0) -> dict:
    """Write OUT.png (with DPI metadata) and OUT.pdf, both at true physical size, with a 50 mm check ruler.

    Returns {"png", "pdf", "page_mm", "paper"}: `paper` is the smallest standard sheet it fits (either orientation).
    """
    spec = as_spec(spec)
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(
            f"matplotlib is needed to write the printable PDF ({exc}); pip install 'matplotlib>=3.7'"
        ) from exc
    bw_mm, bh_mm = spec.size_m[0] * 1000.0, spec.size_m[1] * 1000.0
    footer_mm = 14.0
    page_w, page_h = bw_mm + 2 * margin_mm, bh_mm + 2 * margin_mm + footer_mm
    # render the board at >= dpi with an integer number of pixels per square so corners land on pixel edges
    px_per_square = max(20, int(np.ceil(spec.square_m / 0.0254 * dpi)))
    img = render_board(spec, px_per_square=px_per_square)
    fig = plt.figure(figsize=(page_w / 25.4, page_h / 25.4))
    ax = fig.add_axes((margin_mm / page_w, (margin_mm + footer_mm) / page_h, bw_mm / page_w, bh_mm / page_h))
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    # 50 mm ruler: measure it after printing; if it is not 50 mm the print was scaled ("fit to page" is on)
    rx = fig.add_axes((margin_mm / page_w, 4.0 / page_h, 50.0 / page_w, 3.0 / page_h))
    rx.set_xlim(0, 50)
    rx.set_ylim(0, 1)
    rx.fill_between([0, 50], 0, 1, color="black")
    rx.set_axis_off()
    fig.text(
        (margin_mm + 53.0) / page_w,
        5.5 / page_h,
        f"{spec}   square {spec.square_m * 1000:g} mm, marker {spec.marker_m * 1000:g} mm   "
        "print at 100% (no fit-to-page); the bar must measure 50 mm",
        fontsize=7,
        va="center",
    )
    png, pdf = out_prefix + ".png", out_prefix + ".pdf"
    fig.savefig(pdf)
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    paper = next(
        (name for name, (a, b) in PAPER_MM.items() if (page_w <= a and page_h <= b) or (page_w <= b and page_h <= a)),
        None,
    )
    if paper is None:
        log.warning("board page is %.0fx%.0f mm, larger than A2: print it at a print shop", page_w, page_h)
    return {"png": png, "pdf": pdf, "page_mm": (round(page_w, 1), round(page_h, 1)), "paper": paper}


@dataclass
class Detection:
    """Detected ChArUco corners of one image: `corners` (N, 2) px float64, `ids` (N,) int, image `size` (w, h)."""

    corners: np.ndarray
    ids: np.ndarray
    size: tuple[int, int]
    n_markers: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def object_points(self, spec: BoardSpec) -> np.ndarray:
        return spec.corners_3d()[self.ids]


def to_gray(image: np.ndarray) -> np.ndarray:
    cv2 = require_cv2()
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        # channel order does not matter much for a black-and-white board; frames from drivers are RGB
        return cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)
    raise BoardNotFoundError(f"image of shape {image.shape} is neither grayscale nor colour")


class BoardDetector:
    """Reusable detector (building the OpenCV detector once per board saves time over many images)."""

    def __init__(self, spec: BoardSpec | str):
        cv2 = require_cv2()
        self.spec = as_spec(spec)
        self.board = make_board(self.spec)
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self.detector = cv2.aruco.CharucoDetector(self.board, cv2.aruco.CharucoParameters(), params)

    def detect(self, image: np.ndarray) -> Detection:
        """Detect the board; returns a Detection with possibly 0 corners (never raises for 'not found')."""
        cv2 = require_cv2()
        gray = to_gray(np.asarray(image))
        size = (int(gray.shape[1]), int(gray.shape[0]))
        ch_corners, ch_ids, _, marker_ids = self.detector.detectBoard(gray)
        n_markers = 0 if marker_ids is None else len(marker_ids)
        if ch_ids is None or len(ch_ids) == 0:
            return Detection(np.zeros((0, 2)), np.zeros(0, dtype=int), size, n_markers)
        corners = ch_corners.reshape(-1, 2).astype(np.float32)
        # refine once more on the full-resolution image (CharucoDetector refines on an approximate grid)
        crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
        corners = cv2.cornerSubPix(gray, corners.reshape(-1, 1, 2), (3, 3), (-1, -1), crit).reshape(-1, 2)
        return Detection(corners.astype(np.float64), ch_ids.reshape(-1).astype(int), size, n_markers)


def detect(image: np.ndarray, spec: BoardSpec | str) -> Detection:
    return BoardDetector(spec).detect(image)


def usable_reason(det: Detection, spec: BoardSpec, min_corners: int = MIN_CORNERS) -> str | None:
    """None when a detection is usable for calibration, else why not (for the rejected-views report)."""
    if len(det) == 0:
        return "board not found" + (f" ({det.n_markers} markers seen)" if det.n_markers else "")
    if len(det) < min_corners:
        return f"only {len(det)} corners (need >= {min_corners})"
    nx = spec.squares_x - 1
    grid = np.stack([det.ids % nx, det.ids // nx], axis=1).astype(float)
    grid -= grid.mean(axis=0)
    if np.linalg.matrix_rank(grid, tol=1e-6) < 2:
        return "corners are collinear (one row or column of the board)"
    return None
