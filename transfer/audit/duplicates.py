"""Near-duplicate images: pairs whose cached features are near-identical, by a threshold relative to the data.

A fixed cosine threshold does not carry from one backbone to another: ImageNet features of two different photos
can be 0.8 alike, while a random-init backbone puts every image's nearest neighbour above 0.99. So the features
are centred (the mean image's direction, which every feature vector shares, removed) and scaled to unit length,
each image's nearest neighbours are found (exact, by brute force in chunks: no n x n matrix), and a pair counts as
near-identical when its distance is at most audit.duplicate_ratio times the median nearest-neighbour distance:
"far closer than images usually are to their closest other image". An image saved again at a lower JPEG quality
lands well inside that; two photos of the same scene may too, which is what a person should look at anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Neighbours searched per image: each image's pairs with its NEIGHBOURS nearest are listed, so a group of up to
# NEIGHBOURS + 1 near-identical images is listed in full; an image whose NEIGHBOURS nearest are all near-identical
# is counted in Duplicates.crowded (its group may hold more pairs than listed).
NEIGHBOURS = 10
# Memory for one chunk of the distance computation (scikit-learn's working_memory), in MiB.
WORKING_MEMORY_MIB = 256


@dataclass(frozen=True)
class Duplicates:
    first: np.ndarray  # image index of each pair's first image (the smaller index)
    second: np.ndarray  # image index of its second image
    distance: np.ndarray  # Euclidean distance of the centred unit features (0: identical)
    median_nearest: float  # median over all images of the distance to the nearest other image
    threshold: float  # duplicate_ratio x median_nearest
    crowded: int  # images whose NEIGHBOURS nearest are all within the threshold

    @property
    def similarity(self) -> np.ndarray:
        """Cosine similarity of the centred features, from the distance of unit vectors: 1 - d^2 / 2."""
        return 1 - self.distance**2 / 2

    @property
    def ratio(self) -> np.ndarray:
        """Each pair's distance as a share of the median nearest-neighbour distance (what the threshold applies to)."""
        return self.distance / self.median_nearest if self.median_nearest > 0 else np.zeros_like(self.distance)


def centred_unit_rows(features: np.ndarray) -> np.ndarray:
    """float32 rows minus the mean row, scaled to unit length (a row equal to the mean stays zero)."""
    rows = np.asarray(features, dtype=np.float32) - features.mean(axis=0, dtype=np.float64).astype(np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    np.divide(rows, norms, out=rows, where=norms > 0)
    return rows


def near_duplicates(features: np.ndarray, duplicate_ratio: float) -> Duplicates:
    """Every pair of images (rows of features) among each other's NEIGHBOURS nearest whose distance is at most
    duplicate_ratio times the median nearest-neighbour distance; closest first."""
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    n = len(features)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return Duplicates(empty, empty, np.zeros(0), 0.0, 0.0, 0)
    rows = centred_unit_rows(features)
    with sklearn.config_context(working_memory=WORKING_MEMORY_MIB):
        search = NearestNeighbors(n_neighbors=min(NEIGHBOURS, n - 1), algorithm="brute").fit(rows)
        distances, neighbours = search.kneighbors()  # each image's nearest others, itself left out
    median = float(np.median(distances[:, 0]))
    threshold = duplicate_ratio * median
    close = distances <= threshold
    crowded = int(np.count_nonzero(close[:, -1])) if distances.shape[1] == NEIGHBOURS else 0
    image = np.broadcast_to(np.arange(n)[:, None], neighbours.shape)[close]
    other = neighbours[close]
    first, second = np.minimum(image, other), np.maximum(image, other)
    # A pair found from both ends appears twice: keep one, with the smaller of the two float32 distances.
    order = np.lexsort((distances[close], second, first))
    first, second, distance = first[order], second[order], distances[close][order]
    keep = np.ones(len(first), dtype=bool)
    keep[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    first, second, distance = first[keep], second[keep], distance[keep]
    closest = np.lexsort((second, first, distance))
    distance = distance[closest].astype(np.float64)
    return Duplicates(first[closest], second[closest], distance, median, threshold, crowded)
