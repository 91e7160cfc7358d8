"""Docker engines and registries: shared by the build, test and retention stages."""
