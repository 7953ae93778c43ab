"""The fault-injecting PKCS#11 module (test equipment): C source and its build helper."""
