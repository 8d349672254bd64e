"""How a face is seen: in black and white, toned in a single colour, dimly lit, grainy. Each
hides some of what gives fakes away, and the detector catches fewer of them (model card: "Black
and white", "Sepia", "Dim light", "Grainy low light"), so a REAL verdict on such a face says so.
Each function takes a face's crops (N×H×W×3 RGB uint8)."""
from __future__ import annotations

import cv2
import numpy as np

# Face crops whose colour channels differ by less than this on average (|R−G| + |B−G|, in grey
# levels) are taken for black and white: compression leaves such video a trace of colour noise,
# while skin differs by tens of levels
COLOURLESS_LEVELS = 4.0
# Below this spread of chromaticity (`chromaticity_spread`), a face's colour is a single tone:
# the 106 training clips toned sepia and re-encoded spread 4–15, in colour 27–227 at every quality
# measured, the 32 clips from elsewhere 34 and up
TONED_SPREAD = 20.0
CHROMATICITY_PX = 14
# A face is taken for dimly lit when the brightest 2% of its crops' pixels lie below this luma (of
# 255): nothing in or around it is bright. The 106 training clips measured 145 and up as published,
# 73–135 dimmed two stops (the validation's `dim_crf23_480p`; 87 of the 106 under 120); the 32 clips from elsewhere 131
# and up. Skin alone does not decide it: a dark-skinned face in daylight, beside a lit wall, measured 193.
DIM_HIGHLIGHTS = 120
# A face is taken for grainy where even the smoothest quarter of its crops carries noise above
# this (`grain`: a Gaussian noise's standard deviation, in grey levels). The 106 training clips
# measured 0.29–0.75 as published and 1.01–2.19 grainy (`gained_crf23_480p`); the 32 clips from
# elsewhere 0.31–0.97; an animated GIF's dithering up to 6.9.
GRAINY_LEVEL = 1.0
GRAIN_BLOCKS = 12  # a crop is cut into 12×12 blocks, to find its smoothest parts
# Immerkær's kernel: the difference of two Laplacians, blind to a picture's smooth gradients
NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def colourless(crops: np.ndarray) -> bool:
    """Black and white: colour channels that differ by no more than compression's colour noise (`COLOURLESS_LEVELS`)."""
    rgb = crops.astype(np.int16)
    return float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 2] - rgb[..., 1]).mean()) < COLOURLESS_LEVELS


def toned(crops: np.ndarray) -> bool:
    """Colour, but a single tone of it over a grey picture (`TONED_SPREAD`)."""
    return not colourless(crops) and chromaticity_spread(crops) < TONED_SPREAD


def dim(crops: np.ndarray) -> bool:
    """A face dimly lit: nothing in or around it bright (`DIM_HIGHLIGHTS`)."""
    return highlights(crops) < DIM_HIGHLIGHTS


def highlights(crops: np.ndarray) -> float:
    """How bright the brightest 2% of a face's crops are: the 98th percentile of their luma (of
    255), the median over the crops."""
    luma = np.array([cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) for crop in crops])
    return float(np.median(np.percentile(luma.reshape(len(luma), -1), 98, axis=1)))


def grainy(crops: np.ndarray) -> bool:
    """Grain above what a camera leaves in good light (`GRAINY_LEVEL`), as its gain brings up in a dim room."""
    return grain(crops) > GRAINY_LEVEL


def grain(crops: np.ndarray) -> float:
    """How grainy a face's crops are: the noise left in the smoothest quarter of each crop's
    blocks, where the picture itself varies least (Immerkær's estimate from a Laplacian-difference
    filter, as a Gaussian noise's standard deviation in grey levels); the median over the crops."""
    levels = []
    for crop in crops:
        response = np.abs(cv2.filter2D(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32), -1, NOISE_KERNEL))[1:-1, 1:-1]
        block = response.shape[0] // GRAIN_BLOCKS
        blocks = response[: block * GRAIN_BLOCKS, : block * GRAIN_BLOCKS].reshape(GRAIN_BLOCKS, block, GRAIN_BLOCKS, block)
        levels.append(np.percentile(blocks.mean(axis=(1, 3)), 25) * np.sqrt(np.pi / 2) / 6)
    return float(np.median(levels))


def chromaticity_spread(crops: np.ndarray) -> float:
    """How far the colours of a face's crops differ, light aside: the standard deviation of R's
    and B's shares of R+G+B (×1000) over each crop shrunk to 14 px, which averages away the
    colour noise of compression but not the colours of skin, lips, hair and background, among
    pixels neither dark nor clipped; the median over the crops."""
    spreads = []
    for crop in crops:
        pixels = cv2.resize(crop, (CHROMATICITY_PX, CHROMATICITY_PX), interpolation=cv2.INTER_AREA).reshape(-1, 3).astype(np.float32)
        total = pixels.sum(axis=1)
        lit = (total > 90) & (pixels.max(axis=1) < 250)
        if lit.sum() >= 20:
            red, blue = pixels[lit, 0] / total[lit], pixels[lit, 2] / total[lit]
            spreads.append(1000 * np.sqrt(red.var() + blue.var()))
    return float(np.median(spreads)) if spreads else float("inf")
