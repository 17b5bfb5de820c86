//! DLP: detect and rewrite sensitive data in request bodies.
