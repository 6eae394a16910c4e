//! SafeGate's block and allow lists: reading UT1 folders, hosts files and plain domain
//! lists; normalising hosts and URLs so that encoding tricks cannot bypass a rule; and
//! the compiled, immutable index that answers "which lists match this request".
