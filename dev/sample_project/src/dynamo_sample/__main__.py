from dynamo_sample import __version__
from dynamo_sample.backends import current_backend

print(f"dynamo-sample {__version__} on {current_backend().name}")
