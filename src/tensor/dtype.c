/* Placeholder so the tree links; the GGUF/dtype owner replaces this file. */
#include "tensor/dtype.h"
