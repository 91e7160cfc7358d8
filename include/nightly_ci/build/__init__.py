"""The build-and-publish stage: commit -> images -> registries."""
