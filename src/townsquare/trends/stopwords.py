"""English and French stop words, compact and offline.

Stop words are removed before anything is counted, so they can never trend
whatever their volume; words that are merely frequent in one stream (an
airline's name in airline traffic) are handled by each feature's own
baseline instead, which works in every language. The lists are stored
diacritic-folded and lower-cased, the form :mod:`townsquare.trends.features`
matches on, and include the pieces tokenization leaves behind when it splits
at apostrophes (``don't`` -> ``don`` + ``t``, ``l'avion`` -> ``l`` + ``avion``).
"""

from __future__ import annotations

_ENGLISH = """
a about above after again against ago all almost also am an and any anyone anything are
aren around as at away back be became because been before being below between both but by
came can cannot come could couldn d did didn do does doesn doing don done down during each
else even ever every few for from further get gets getting go goes going gone got gotten
had hadn has hasn have haven having he her here hers herself him himself his how however i
if in into is isn it its itself just last least less let like ll m made make many may me
might more most much must mustn my myself never next no nor not now o of off oh ok okay
on once one only or other our ours ourselves out over own please put re really s said same
say says see seem shall shan she should shouldn since so some someone something still such
t take than that the their theirs them themselves then there these they thing things this
those though through thru to too took u under until up upon ur us use used ve very via want
wants was wasn way we well went were weren what when where whether which while who whom
whose why will with within without won would wouldn y yes yet you your yours yourself
yourselves
rt amp gt lt http https www com im ive id youre dont didnt doesnt cant wont isnt thats
theres lol yeah hey hi pls plz thx btw via
"""

_FRENCH = """
a ai aie aient aies ait alors as au aucun aucune aupres aussi autre autres aux avaient avais
avait avant avec avez aviez avions avoir avons ayant c ca car ce ceci cela celle celles celui
ces cet cette ceux chacun chaque chez ci comme comment d dans de des deja depuis donc dont du
elle elles en encore entre es est et etaient etais etait etant ete etes etiez etions etre eu
eue eues eurent eus eusse eut eux faire fait fais font fut h hui ici il ils j je jusqu jusque
l la le les leur leurs lui m ma mais me meme memes mes moi moins mon n ne ni non nos notre
nous on ont ou oui par parce pas peu peut plus pour pourquoi qu quand que quel quelle quelles
quels qui quoi s sa sans se sera serait ses si sien soit sommes son sont sous suis sur t ta
te tes toi ton tous tout toute toutes tres tu un une unes uns v va vais vers via voici voila
vont vos votre vous vu y aujourd c est ok bon bien
"""

STOP_WORDS: frozenset[str] = frozenset((_ENGLISH + _FRENCH).split())

#: Lower-case words allowed *inside* a run of capitalized words, so that
#: "Bank of America" and "Charles de Gaulle" stay one entity.
ENTITY_CONNECTORS: frozenset[str] = frozenset(
    "of the de du des la le van von der del da di".split()
)
