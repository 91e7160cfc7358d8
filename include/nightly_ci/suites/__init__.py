"""The test stage: each suite of each cell inside the image the run pushed, by digest."""
