"""Host side of the real-kernel VM suite: fetch the guest's parts, build its image, boot one
QEMU guest per scenario, and judge what the guest reports."""
