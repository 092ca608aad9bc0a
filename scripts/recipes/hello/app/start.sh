#!/bin/sh
echo "hello from $(hostname) in $MODE mode"
