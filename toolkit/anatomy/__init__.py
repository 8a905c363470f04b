"""Judging the anatomy of images of the figures world: limbs found by their colours, distortions and PCK."""
