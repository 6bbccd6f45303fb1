//! Regression tests for the findings of fuzzing (fuzz/README.md): each minimized input, embedded or
//! built in code, must now give an error (or a correct answer) instead of a panic, a hang or a huge
//! allocation.
