/* Placeholder so the tree links; the GGUF owner replaces this file. */
#include "model/gguf.h"
