"""The frozen backbone run once over every image: the backbones, decoding workers, the memory check, the
feature cache."""
