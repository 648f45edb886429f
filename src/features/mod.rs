//! Features (one module per XEP or RFC area) and the registry they register in. (SKELETON)
