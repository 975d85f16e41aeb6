#!/usr/bin/env bash
# C++ compiler wrapper for building Horovod 0.28.1 against torch >= 2.1.
# Horovod's build asks for -std=c++11/-std=c++14, but torch's headers require C++17 and
# the upstream fix never reached a release. Rewrite the standard flag, pass the rest through.
args=()
for a in "$@"; do
  case "$a" in
    -std=c++11|-std=c++14) a=-std=c++17 ;;
    -std=gnu++11|-std=gnu++14) a=-std=gnu++17 ;;
  esac
  args+=("$a")
done
exec "${HARNESS_REAL_CXX:-g++}" "${args[@]}"
