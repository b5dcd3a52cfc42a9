"""The code the stages share: archives, images, backbones, devices, params; stages/ holds the entry points."""
