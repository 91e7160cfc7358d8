#!/bin/sh
# Stand-in for the real project's wheel builds (NIXL, the dynamo wheels), bind-mounted
# into the wheel_builder stage: it writes a wheel and a record of how it was built.
# sccache: with both AWS secrets mounted it "compiles through S3"; the secrets are read,
# never written (the record says only which cache was used).
set -eu
out=$1
mkdir -p "$out"
if [ -s /run/secrets/aws-key-id ] && [ -s /run/secrets/aws-secret-id ]; then cache=s3; else cache=local; fi
printf 'wheel=dynamo-%s-py3-none-linux_%s.whl\nsccache=%s\n' "$FRAMEWORK" "$ARCH_ALT" "$cache" > "$out/build-info"
head -c 65536 /dev/zero > "$out/dynamo-$FRAMEWORK-py3-none-linux_$ARCH_ALT.whl"
