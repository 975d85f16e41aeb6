#!/usr/bin/env bash
# Fails with a clear message unless `java -version` reports Java 17 (Spark's JVM, see docs/DESIGN.md).
if ! command -v java >/dev/null 2>&1; then
  echo "error: Java 17 is required (Spark runs on the JVM) but 'java' is not on PATH." >&2
  echo "fix: install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME and PATH." >&2
  exit 2
fi
ver=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n1)
if [ "$ver" != "17" ]; then
  echo "error: Java 17 is required, found '$(java -version 2>&1 | head -n1)'." >&2
  echo "fix: install Java 17 and put it first on PATH (or set JAVA_HOME)." >&2
  exit 2
fi
