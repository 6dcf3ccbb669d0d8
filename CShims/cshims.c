// Implementation pending (issue 2): see include/cshims.h.
#include "cshims.h"
