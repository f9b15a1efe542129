package main

import (
	"fmt"
	"io"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sgd run: not built yet")
	return 2
}
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sgd status: not built yet")
	return 2
}
func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sgd demo: not built yet")
	return 2
}
func cmdBench(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "sgd bench: not built yet")
	return 2
}
